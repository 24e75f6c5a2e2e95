"""RigorousCallback: record a Keras 3 model's fit, evaluate and predict calls in a collection.

>>> cb = RigorousCallback("data/my_study", batch_size=32)  # doctest: +SKIP
>>> model.fit(x, y, validation_split=0.2, epochs=3, callbacks=[cb])  # doctest: +SKIP
>>> model.evaluate(x_test, y_test, callbacks=[cb])  # doctest: +SKIP
>>> cb.collection.sql("SELECT epoch, val_loss FROM records WHERE val_loss IS NOT NULL")  # doctest: +SKIP

The tree of one experiment::

    experiment (bookkeeping + experiment info)
    └── model (model, optimizer, learning_rate, the optimizer's config, parameters)
        ├── stage="train",    fit=1      one record per batch: epoch, batch, step, learning_rate, logs
        ├── stage="epoch",    fit=1      one record per epoch: epoch, step, learning_rate, logs (val_*)
        ├── stage="validate", fit=1      the validation batches run inside fit: epoch, batch, step, logs
        ├── stage="test",     evaluate=1 one record per evaluate() batch: batch, logs (step: at the call)
        └── stage="predict",  predict=1  one record per predict() batch: batch, samples

Each fit/evaluate/predict call gets its own stage recorders, numbered by the ``fit``,
``evaluate`` and ``predict`` keys. ``step`` counts training steps across every fit call of
the callback, so it only grows. ``epoch`` and ``batch`` are Keras's own 0-based indices.

How a run ends (Keras has no "on exception" hook):

* ``with cb: model.fit(...)`` finishes the experiment at the end of the block; an exception
  (KeyboardInterrupt included) that escapes marks it failed (``had_error``) and propagates
  unchanged.
* ``cb.finish()`` finishes it by hand. Without either, it stays open across calls (fit, then
  evaluate, then queries) and is finished when the process exits: by ``sys.excepthook``
  with the uncaught exception, else by ``atexit``.
* A call whose end hook never ran (an exception left it) taints the experiment: it is
  noticed at the next call's begin hook, by ``finish()`` or at exit, its stage recorders get
  ``interrupted=True``, and the experiment finishes as failed.
* Records are flushed to disk at every epoch end and call end (and every second by the
  collection), so a crash keeps them.

Batch-end hooks run synchronously (``async_safe = False``): on the torch backend Keras would
otherwise run them on a thread pool, after the next batch began, and values ``add()``-ed to
``cb.recorder`` during batch n+1 would land in batch n's record.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from rigorous_recorder import Experiment, ExperimentCollection, Recorder

try:
    import keras
except ModuleNotFoundError as error:  # pragma: no cover - depends on the environment
    raise ModuleNotFoundError(
        "RigorousCallback needs Keras 3: pip install 'rigorous-recorder[keras]'", name="keras"
    ) from error

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["RigorousCallback"]

_PLAIN = (str, int, float, bool, type(None))


class RigorousCallback(keras.callbacks.Callback):
    """A Keras callback that records every batch of fit, evaluate and predict into a collection.

    Args:
        collection: a path (``.collection`` is appended) or an existing ExperimentCollection.
        experiment_info: experiment info as a dict (its keys need not be identifiers).
        **info: more experiment info, e.g. ``batch_size=32``.
    """

    #: Batch-end hooks must run on the training thread, in order: see the module docstring.
    async_safe = False

    def __init__(self, collection: str | os.PathLike[str] | ExperimentCollection,
                 experiment_info: Mapping[str, Any] | None = None, /, **info: Any) -> None:
        super().__init__()
        self.collection = collection if isinstance(collection, ExperimentCollection) else ExperimentCollection(collection)
        self.info = {**(experiment_info or {}), **info}
        self.experiment: Experiment | None = None
        self._reset()

    def _reset(self) -> None:
        self._models: dict[tuple[int, int], Recorder] = {}
        self._calls = {"fit": 0, "evaluate": 0, "predict": 0}
        self._open: dict[str, list[Recorder]] = {}  # kind -> its stage recorders, while the call runs
        self._interrupted: str | None = None
        self._current: Recorder | None = None
        self._train = self._epochs = self._validate = self._test = self._predict = None
        self._optimizer: Any = None
        self._step = 0
        self._epoch = 0
        self._last_batch = -1
        self._learning_rate: float | None = None
        self._schedule: Any = None  # the optimizer's learning-rate schedule, if it has one
        self._epoch_rates: list[float] | None = None  # the schedule's rate at each batch of the epoch
        self._new_call = False  # set_model ran: a top-level fit/evaluate/predict is starting

    # -- the experiment ------------------------------------------------------------------

    @property
    def recorder(self) -> Recorder | None:
        """The recorder of the running stage (values ``add()``-ed go into its next record).

        Outside a call: the model recorder of the last call, else the experiment recorder,
        else None before the first call.
        """
        if self._current is not None:
            return self._current
        return self.experiment.recorder if self.experiment is not None else None

    def start(self) -> Experiment:
        """Start the experiment now (the first hook does it otherwise); returns it."""
        if self.experiment is None or self.experiment.finished:
            self._reset()
            self.experiment = self.collection.new_experiment(self.info)
            _LIVE.add(self)
            _install_fallbacks()
        return self.experiment

    def finish(self, error: BaseException | None = None) -> None:
        """Finish the experiment: failed if ``error`` is given or a call was interrupted."""
        if self.experiment is None or self.experiment.finished:
            return
        self._close_interrupted()
        if error is None and self._interrupted is not None:
            error = RuntimeError(self._interrupted)
        _LIVE.discard(self)
        self._current = None
        self.experiment.finish(error)

    def __enter__(self) -> RigorousCallback:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.finish(error)

    def _close_interrupted(self) -> None:
        """Mark the calls that began and never ended as interrupted."""
        for kind, stages in self._open.items():
            for stage in stages:
                stage["interrupted"] = True
            if self._interrupted is None:
                self._interrupted = f"a {kind}() call was interrupted: its end hook never ran"
        self._open.clear()

    def _begin(self, kind: str, stages: tuple[str, ...]) -> list[Recorder]:
        """Open a call of ``kind``: number it and make its stage recorders below the model's."""
        self.start()
        self._new_call = False
        self._close_interrupted()
        self._calls[kind] += 1
        model = self.model
        self._optimizer = getattr(model, "optimizer", None)
        key = (id(model), id(self._optimizer))
        parent = self._models.get(key)
        if parent is None:
            parent = self._models[key] = self.experiment.recorder.sub_recorder(_describe(model, self._optimizer))
        extra = {"step": self._step} if kind != "fit" else {}
        recorders = [parent.sub_recorder(stage=stage, **{kind: self._calls[kind]}, **extra) for stage in stages]
        self._open[kind] = recorders
        return recorders

    def _end(self, kind: str) -> None:
        self._open.pop(kind, None)
        self._current = None
        self.experiment.flush()

    def set_model(self, model: Any) -> None:
        # Keras builds a CallbackList, which calls set_model, at the start of each top-level
        # fit/evaluate/predict; validation inside fit reuses fit's list and does not.
        super().set_model(model)
        self._new_call = True

    # -- fit -----------------------------------------------------------------------------

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._train, self._epochs = self._begin("fit", ("train", "epoch"))
        self._validate = None
        self._current = self._train
        self._schedule = _schedule_of(self._optimizer)

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epoch = epoch
        self._last_batch = -1
        self._current = self._train
        self._epoch_rates = self._rates_of_epoch()

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        # Read before the optimizer step: the learning rate this batch is trained with.
        if self._epoch_rates is not None and batch < len(self._epoch_rates):
            self._learning_rate = self._epoch_rates[batch]
        elif self._optimizer is not None:
            self._learning_rate = float(keras.ops.convert_to_numpy(self._optimizer.learning_rate))

    def _rates_of_epoch(self) -> list[float] | None:
        """A schedule's rate at every batch of the coming epoch, in one vectorized evaluation.

        Evaluating the schedule once per batch costs a few backend calls each (about 45 us
        on torch, most of a tiny model's overhead). None, and per-batch reads, when the
        epoch's length is unknown, when steps do not map one to one onto optimizer
        iterations, or when the schedule does not evaluate elementwise the same as one by one.
        """
        optimizer, steps = self._optimizer, (self.params or {}).get("steps")
        if self._schedule is None or not steps or getattr(optimizer, "gradient_accumulation_steps", None):
            return None
        first = int(keras.ops.convert_to_numpy(optimizer.iterations))
        try:
            rates = keras.ops.convert_to_numpy(self._schedule(keras.ops.arange(first, first + steps, dtype="float32")))
        except Exception:  # noqa: BLE001 - a schedule written for one step at a time
            return None
        ends = [float(keras.ops.convert_to_numpy(self._schedule(step))) for step in (first, first + steps - 1)]
        if rates.shape != (steps,) or [float(rates[0]), float(rates[-1])] != ends:
            return None
        return [float(rate) for rate in rates]

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._step += batch - self._last_batch  # more than 1 with steps_per_execution > 1
        self._last_batch = batch
        self._train.push(logs, epoch=self._epoch, batch=batch, step=self._step, learning_rate=self._learning_rate)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epochs.push(logs, epoch=epoch, step=self._step, learning_rate=self._learning_rate)
        self._current = self._train
        self.experiment.flush()

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self._end("fit")

    # -- evaluate, and validation inside fit ---------------------------------------------

    def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
        if "fit" in self._open and not self._new_call:  # validation inside fit()
            if self._validate is None:
                self._validate = self._train.parent.sub_recorder(stage="validate", fit=self._calls["fit"])
                self._open["fit"].append(self._validate)
            self._test = self._validate
        else:
            (self._test,) = self._begin("evaluate", ("test",))
        self._current = self._test

    def on_test_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self._test is self._validate:
            self._test.push(logs, epoch=self._epoch, batch=batch, step=self._step)
        else:
            self._test.push(logs, batch=batch)

    def on_test_end(self, logs: dict[str, Any] | None = None) -> None:
        if self._test is self._validate:
            self._current = self._epochs  # until on_epoch_end commits the epoch's record
        else:
            self._end("evaluate")
        self._test = None

    # -- predict -------------------------------------------------------------------------

    def on_predict_begin(self, logs: dict[str, Any] | None = None) -> None:
        (self._predict,) = self._begin("predict", ("predict",))
        self._current = self._predict

    def on_predict_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        outputs = keras.tree.flatten((logs or {}).get("outputs"))
        samples = int(outputs[0].shape[0]) if outputs and getattr(outputs[0], "shape", ()) else None
        self._predict.push(batch=batch, samples=samples)

    def on_predict_end(self, logs: dict[str, Any] | None = None) -> None:
        self._end("predict")

    def __repr__(self) -> str:
        return f"RigorousCallback({str(self.collection.path)!r}, experiment={self.experiment!r})"


def _schedule_of(optimizer: Any) -> Any:
    """The optimizer's learning-rate schedule, rebuilt from its config; None for a plain rate."""
    if optimizer is None:
        return None
    config = optimizer.get_config().get("learning_rate")
    if isinstance(config, _PLAIN):
        return None
    try:
        return keras.optimizers.schedules.deserialize(config)
    except Exception:  # noqa: BLE001 - a custom schedule Keras cannot rebuild: read it per batch
        return None


def _describe(model: Any, optimizer: Any) -> dict[str, Any]:
    """The model recorder's data: names, parameter count, the optimizer's config as scalars."""
    data: dict[str, Any] = {"model": getattr(model, "name", type(model).__name__)}
    try:
        data["parameters"] = int(model.count_params())
    except ValueError:  # a model not built yet
        data["parameters"] = None
    if optimizer is None:
        return data
    data["optimizer"] = type(optimizer).__name__
    for key, value in optimizer.get_config().items():
        if key == "name":
            continue
        if key == "learning_rate":
            if not isinstance(value, _PLAIN):  # a schedule: its config, and its value now
                data["learning_rate_schedule"] = json.dumps(value, sort_keys=True, default=str)
            value = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
        elif not isinstance(value, _PLAIN):
            value = json.dumps(value, sort_keys=True, default=str)
        data[key] = value
    return data


# -- the fallbacks that finish experiments left running ----------------------------------

_LIVE: weakref.WeakSet[RigorousCallback] = weakref.WeakSet()
_installed = False


def _install_fallbacks() -> None:
    """Once per process: finish running experiments on an uncaught exception, and at exit."""
    global _installed
    if _installed:
        return
    _installed = True
    previous = sys.excepthook

    def excepthook(kind: type[BaseException], error: BaseException, trace: TracebackType | None) -> None:
        _finish_live(error)
        previous(kind, error, trace)

    sys.excepthook = excepthook
    atexit.register(_finish_live, None)


def _finish_live(error: BaseException | None) -> None:
    for callback in list(_LIVE):
        try:
            callback.finish(error)
        except Exception as problem:  # noqa: BLE001 - never hide the original error
            print(f"rigorous_recorder: could not finish {callback!r}: {problem!r}", file=sys.stderr)
