"""Per-batch overhead of RigorousCallback on a tiny Keras model (torch backend, CPU).

Times ``model.fit`` on a tiny Dense model with no callback, with keras.callbacks.CSVLogger
and with RigorousCallback (constant learning rate, and an ExponentialDecay schedule), in
interleaved rounds in one process, and prints a markdown table of microseconds per batch
(median over rounds) plus one ``PASS:``/``FAIL:`` line for the target: RigorousCallback adds
less than 5% to the tiny model's batch time. Exits 1 when the target fails.

    .venv/bin/python benchmarks/keras_overhead.py           # ~1 minute
    .venv/bin/python benchmarks/keras_overhead.py --quick   # a smoke test in seconds
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # a tiny model: threads only add noise

import keras  # noqa: E402
import numpy as np  # noqa: E402

from rigorous_recorder import ExperimentCollection  # noqa: E402
from rigorous_recorder.integrations.keras import RigorousCallback  # noqa: E402

TARGET = 0.05


class TimedCallback(RigorousCallback):
    """RigorousCallback that adds up the time spent in its own per-batch training hooks."""

    spent: dict[str, float] = {}

    def on_train_batch_begin(self, batch, logs=None):  # noqa: ANN001, ANN201
        start = time.perf_counter()
        super().on_train_batch_begin(batch, logs)
        self.spent[self.info["contender"]] = self.spent.get(self.info["contender"], 0.0) + time.perf_counter() - start

    def on_train_batch_end(self, batch, logs=None):  # noqa: ANN001, ANN201
        start = time.perf_counter()
        super().on_train_batch_end(batch, logs)
        self.spent[self.info["contender"]] = self.spent.get(self.info["contender"], 0.0) + time.perf_counter() - start


def tiny_model(schedule: bool = False) -> keras.Model:
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)])
    rate = keras.optimizers.schedules.ExponentialDecay(0.01, 100, 0.9) if schedule else 0.01
    model.compile(optimizer=keras.optimizers.Adam(rate), loss="mse")
    return model


def time_fit(contender: str, x: np.ndarray, y: np.ndarray, epochs: int, batch_size: int, folder: Path) -> float:
    """Seconds per batch of one fit call (the model is built and warmed up first)."""
    model = tiny_model(schedule=contender.endswith("schedule"))
    model.fit(x[:batch_size * 2], y[:batch_size * 2], batch_size=batch_size, epochs=1, verbose=0)  # warm-up
    callbacks: list[keras.callbacks.Callback] = []
    collection = None
    if contender == "CSVLogger":
        callbacks = [keras.callbacks.CSVLogger(str(folder / f"log-{time.time_ns()}.csv"))]
    elif contender.startswith("RigorousCallback"):
        collection = ExperimentCollection(folder / "study", quiet=True)
        callbacks = [TimedCallback(collection, contender=contender)]
    start = time.perf_counter()
    model.fit(x, y, batch_size=batch_size, epochs=epochs, callbacks=callbacks, verbose=0)
    elapsed = time.perf_counter() - start
    for callback in callbacks:
        if isinstance(callback, RigorousCallback):
            callback.finish()
    return elapsed / (epochs * -(-len(x) // batch_size))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few batches and rounds: a smoke test")
    args = parser.parse_args()
    rounds, batches, epochs, batch_size = (2, 50, 2, 32) if args.quick else (7, 300, 3, 32)
    rng = np.random.default_rng(0)
    x = rng.random((batches * batch_size, 8), dtype=np.float32)
    y = x.sum(axis=1, keepdims=True)
    contenders = ["no callback", "CSVLogger", "RigorousCallback", "RigorousCallback, LR schedule"]
    times: dict[str, list[float]] = {name: [] for name in contenders}
    with tempfile.TemporaryDirectory() as folder:
        for round_number in range(rounds):
            for name in contenders if round_number % 2 == 0 else reversed(contenders):
                times[name].append(time_fit(name, x, y, epochs, batch_size, Path(folder)))
            print(f"round {round_number + 1}/{rounds} done", file=sys.stderr, flush=True)
    median = {name: statistics.median(values) * 1e6 for name, values in times.items()}
    best = {name: min(values) * 1e6 for name, values in times.items()}
    base, best_base = median["no callback"], best["no callback"]
    in_hooks = {name: spent * 1e6 / (rounds * epochs * batches) for name, spent in TimedCallback.spent.items()}
    print(f"\nKeras {keras.__version__}, backend {keras.backend.backend()}, {epochs} epochs x {batches} batches "
          f"of {batch_size}, {rounds} rounds\n")
    print("| contender | µs per batch, median | overhead, median | µs per batch, best | overhead, best |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name in contenders:
        print(f"| {name} | {median[name]:.1f} | {(median[name] - base) / base:+.1%} "
              f"| {best[name]:.1f} | {(best[name] - best_base) / best_base:+.1%} |")
    print("\nTime inside RigorousCallback's per-batch training hooks (begin + end), per batch:")
    for name, spent in in_hooks.items():
        print(f"- {name}: {spent:.1f} µs ({spent / best_base:.1%} of the best batch time without a callback)")
    overhead = in_hooks["RigorousCallback"] / best_base
    verdict = "PASS" if overhead < TARGET else "FAIL"
    print(f"{verdict}: RigorousCallback's hooks add {overhead:.1%} to the best batch time without a callback "
          f"(target < {TARGET:.0%})")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
