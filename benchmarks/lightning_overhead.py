"""Per-step overhead of RigorousLogger next to Lightning's CSVLogger and no logger (issue #13's target).

The workload is ``peers.py``'s Lightning one (``peers_frameworks.lightning_fit``): Linear(32, 1),
``log_every_n_steps=1``, batch size 1, CPU, one thread. Several fresh processes, one after the
other; each fits every contender once to warm up, then runs cycles that fit each contender once
in turn (the order rotating), so that the contenders of one cycle share a process and a moment.
A contender's overhead in a cycle is its CPU time per step minus no logger's in that cycle;
the table gives the median and quartiles over all cycles:

- **logging code**: CPU time per step inside Lightning's logging path (the logger connector's
  ``log_metrics``, which calls every logger's ``log_metrics`` and ``save``; the callback hook
  dispatch, where our companion callback runs; the logger's end of run) plus the process's
  other threads (our background writer). It times microseconds of code per step instead of a
  whole fit, so other work on the machine disturbs it far less. The target is judged on it:
  ours <= 0.5x CSVLogger's.
- **whole fit**: the process's CPU time per step; on a busy machine it moves by more than a
  logger costs.

    .venv/bin/python benchmarks/lightning_overhead.py              # ~6 minutes on 2 idle cores
    .venv/bin/python benchmarks/lightning_overhead.py --quick      # a smoke test, ~1 minute
"""

from __future__ import annotations

import sys

import peers_frameworks


def main() -> int:
    args = peers_frameworks.overhead_options(__doc__, "1 process, 2 cycles of 300 steps")
    processes, cycles, steps = (1, 2, 300) if args.quick else (args.processes, args.cycles, 2000)
    return peers_frameworks.overhead_benchmark(
        "lightning", ["no logger", "CSVLogger", "ours"], "step", processes=processes, cycles=cycles, steps=steps,
        title=f"Lightning: Linear(32, 1), {steps:,} steps of batch size 1, `log_every_n_steps=1`, CPU")


if __name__ == "__main__":
    sys.exit(main())
