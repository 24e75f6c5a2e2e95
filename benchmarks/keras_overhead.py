"""Per-batch overhead of RigorousCallback next to Keras's CSVLogger and no callback (issue #13's target).

The workload is ``peers.py``'s Keras one (``peers_frameworks.keras_fit``): Dense(16) + Dense(1)
on the torch backend, CPU, one thread, 3 epochs x 300 batches of 32; each contender in a fresh
process that fits briefly once first, contenders interleaved over rounds. Two overheads over
no callback's in the same round, median over rounds:

- **whole fit**: the process's CPU time per batch, as ``peers.py`` reports it; the rounds
  disagree by more than a callback costs.
- **logging code**: CPU time per batch inside Keras's ``CallbackList`` hooks (where callbacks
  run, or are handed to Keras's thread pool) and the callback's end of run, plus the process's
  other threads (that thread pool, our background writer). The target is judged on it: ours
  <= 0.5x CSVLogger's.

With no callback, or only callbacks that leave the batch-end hooks alone (CSVLogger), Keras on
torch hands every batch end to a thread pool; RigorousCallback runs its batch-end hook on the
training thread (see ``integrations/keras.py``), which spares that hand-over.

    .venv/bin/python benchmarks/keras_overhead.py              # ~4 minutes on 2 idle cores
    .venv/bin/python benchmarks/keras_overhead.py --quick      # a smoke test, ~1 minute
"""

from __future__ import annotations

import argparse
import sys

import peers_frameworks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--quick", action="store_true", help="1 epoch of 50 batches, 1 round: a smoke test")
    args = parser.parse_args()
    rounds, epochs, batches = (1, 1, 50) if args.quick else (args.rounds, 3, 300)
    return peers_frameworks.overhead_benchmark(
        "keras_fit", ["no callback", "CSVLogger", "ours"], "batch", rounds=rounds, epochs=epochs, batches=batches,
        batch_size=32, title=f"Keras (torch backend): Dense(16) + Dense(1), {epochs} epochs x {batches} batches of 32, CPU")


if __name__ == "__main__":
    sys.exit(main())
