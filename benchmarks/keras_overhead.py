"""Per-batch overhead of RigorousCallback next to Keras's CSVLogger, loggers that work per batch, and no callback.

The workload is ``peers.py``'s Keras one (``peers_frameworks.keras_fit``): Dense(16) + Dense(1)
on the torch backend, CPU, one thread, batches of 32. Several fresh processes, one after the
other; each fits every contender once to warm up, then runs cycles that fit each contender once
in turn (the order rotating; the model trains on from fit to fit), so that the contenders of
one cycle share a process and a moment. A contender's overhead in a cycle is its CPU time per
batch minus no callback's in that cycle; the table gives the median and quartiles over all cycles:

- **logging code**: CPU time per batch inside Keras's ``CallbackList`` hooks (where callbacks
  run, or are handed to Keras's thread pool) and the callback's end of run, plus the process's
  other threads (that thread pool, our background writer). The target is judged on it: ours
  <= 0.5x CSVLogger's.
- **whole fit**: the process's CPU time per batch; the cycles disagree by more than a callback costs.

Keras's CSVLogger writes one row per epoch and does nothing per batch, so its per-batch overhead
is close to zero and the ratio can be noise over noise: when CSVLogger's overhead is not clearly
above zero the script says so instead of printing a ratio (issue #13's target is that ratio).
With no callback, or only callbacks that leave the batch-end hooks alone (CSVLogger), Keras on
torch hands every batch end to a thread pool; RigorousCallback runs its batch-end hook on the
training thread (see ``integrations/keras.py``), which spares that hand-over. Two more
contenders show what that is worth and what logging each batch costs with Keras's own code:

- **no-op batch hook**: a callback whose batch-end hook does nothing, so that Keras calls batch
  ends on the training thread as with ours: ours minus it is ours' own code;
- **CSVLogger per batch**: Keras's CSVLogger writing a row of each batch's logs (its own row
  writer and flush, called at each batch end): the same values logged per batch.

    .venv/bin/python benchmarks/keras_overhead.py              # ~9 minutes on 2 idle cores
    .venv/bin/python benchmarks/keras_overhead.py --quick      # a smoke test, ~1 minute
"""

from __future__ import annotations

import sys

import peers_frameworks


def main() -> int:
    args = peers_frameworks.overhead_options(__doc__, "1 process, 2 cycles of 1 epoch of 50 batches")
    processes, cycles, epochs, batches = (1, 2, 1, 50) if args.quick else (args.processes, args.cycles, 3, 300)
    return peers_frameworks.overhead_benchmark(
        "keras", ["no callback", "CSVLogger", "ours", "CSVLogger per batch", "no-op batch hook"], "batch",
        same_dispatch="no-op batch hook", processes=processes, cycles=cycles, epochs=epochs,
        batches=batches, batch_size=32,
        title=f"Keras (torch backend): Dense(16) + Dense(1), {epochs} epochs x {batches} batches of 32, CPU")


if __name__ == "__main__":
    sys.exit(main())
