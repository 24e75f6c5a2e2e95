"""Per-step overhead of RigorousLogger next to Lightning's CSVLogger and no logger (issue #13's target).

The workload is ``peers.py``'s Lightning one (``peers_frameworks.lightning_fit``): Linear(32, 1),
2,000 steps of batch size 1, ``log_every_n_steps=1``, CPU, one thread; each contender in a
fresh process that fits briefly once first, contenders interleaved over rounds. Two overheads
over no logger's in the same round, median over rounds:

- **whole fit**: the process's CPU time per step, as ``peers.py`` reports it. On a busy
  machine the rounds disagree by more than a logger costs.
- **logging code**: CPU time per step inside Lightning's logging path (the logger connector's
  ``log_metrics``, which calls every logger's ``log_metrics`` and ``save``; the callback hook
  dispatch, where our companion callback runs; the logger's end of run) plus the process's
  other threads (our background writer). It times microseconds of code per step instead of a
  whole fit, so other work on the machine disturbs it far less. The target is judged on it:
  ours <= 0.5x CSVLogger's.

    .venv/bin/python benchmarks/lightning_overhead.py              # ~5 minutes on 2 idle cores
    .venv/bin/python benchmarks/lightning_overhead.py --quick      # a smoke test, ~1 minute
"""

from __future__ import annotations

import argparse
import sys

import peers_frameworks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--quick", action="store_true", help="300 steps, 1 round: a smoke test")
    args = parser.parse_args()
    rounds, steps = (1, 300) if args.quick else (args.rounds, 2000)
    return peers_frameworks.overhead_benchmark(
        "lightning_fit", ["no logger", "CSVLogger", "ours"], "step", rounds=rounds, steps=steps,
        title=f"Lightning: Linear(32, 1), {steps:,} steps of batch size 1, `log_every_n_steps=1`, CPU")


if __name__ == "__main__":
    sys.exit(main())
