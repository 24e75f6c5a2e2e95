"""RigorousCallback: record a Keras 3 model's fit, evaluate and predict calls in a collection.

>>> cb = RigorousCallback("data/my_study", batch_size=32)  # doctest: +SKIP
>>> model.fit(x, y, validation_split=0.2, epochs=3, callbacks=[cb])  # doctest: +SKIP
>>> model.evaluate(x_test, y_test, callbacks=[cb])  # doctest: +SKIP
>>> cb.collection.sql("SELECT epoch, val_loss FROM records WHERE level = 'epoch' AND stage = 'validate'")  # doctest: +SKIP

The tree of one experiment::

    experiment (the experiment info; collection bookkeeping above it)
    └── model (model, model_number, parameters, optimizer and its config)
        ├── stage="train",    fit=1       level=step: a batch; level=epoch: the epoch's training logs
        ├── stage="validate", fit=1       level=batch: a validation batch (val_* names); level=epoch: val_* logs
        ├── stage="test",     evaluate=1  level=batch: an evaluate() batch
        └── stage="predict",  predict=1   level=batch: a predict() batch, with its number of samples

Aligned with the Lightning adapter: ``step`` is the optimizer's step count before the batch
(0-based); validation rows and epoch rows carry the step of the epoch's last training batch;
``epoch`` and ``batch_idx`` are Keras's 0-based indices; validation values are named
``val_<metric>`` on batch rows too; every record sees the ``learning_rate`` in force and has a
``wall_time`` (``time.time()`` at the hook that made it). Float values that are float32 are
stored as the float32 value Keras shows (``0.005``, not ``0.004999999888``).

The experiment ends with ``with cb:``, ``cb.finish()``, or else as the core does it: at the
process's exit, or on an uncaught exception (marked failed). A call whose end hook never ran
(an exception escaped it, then was caught) is noticed at the next call, or at the process's
exit: its records get ``interrupted=True`` and the experiment ends as failed; a next call
starts a new attempt (same experiment number, next error number).

Batch-end hooks run synchronously (``async_safe = False``): on the torch backend Keras would
otherwise run them on a thread pool, after the next batch began, and values ``add()``-ed to
``cb.recorder`` during batch n+1 would land in batch n's record.
"""

from __future__ import annotations

import atexit
import json
import os
import time
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Callable

from rigorous_recorder import Experiment, ExperimentCollection, Recorder
from rigorous_recorder._hotpath import float32_seen, seen_logs
from rigorous_recorder.errors import UnsupportedValueError
from rigorous_recorder.experiment import why_process_ends

from ._common import BATCH, EPOCH, STEP, NullRecorder, add_logged, commit_row, flattened, storable_logs, stored_info

try:
    import keras
except ModuleNotFoundError as error:  # pragma: no cover - depends on the environment
    if error.name == "keras":
        raise ModuleNotFoundError("RigorousCallback needs Keras 3: pip install 'rigorous-recorder[keras]'",
                                  name="keras") from error
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    raise ModuleNotFoundError(
        f"Keras is installed but cannot import its backend {backend!r} ({error}): install it, or set the "
        "KERAS_BACKEND environment variable to an installed backend (jax, torch or tensorflow) before "
        "importing Keras", name=error.name) from error

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["RigorousCallback"]

_PLAIN = (str, int, float, bool, type(None))
#: The callbacks with a call that began and has not ended: finished as failed at exit, if still so.
_unfinished_calls: weakref.WeakSet[RigorousCallback] = weakref.WeakSet()
#: Keys the callback sets on the model and stage recorders.
MODEL_KEYS = frozenset({"model", "model_number", "parameters", "optimizer", "learning_rate",
                        "learning_rate_schedule", "stage", "fit", "evaluate", "predict", "samples", "interrupted"})


class RigorousCallback(keras.callbacks.Callback):
    """A Keras callback that records every batch of fit, evaluate and predict into a collection.

    Args:
        collection: a path (``.collection`` is appended) or an existing ExperimentCollection.
        experiment_info: experiment info as a dict (its keys need not be identifiers).
        quiet: passed to the collection when ``collection`` is a path: ``False`` prints on stderr
            where each run starts and where it was saved (by default nothing, as Keras's CSVLogger).
        **info: more experiment info, e.g. ``batch_size=32``.
    """

    #: Batch-end hooks must run on the training thread, in order: see the module docstring.
    async_safe = False

    def __init__(self, collection: str | os.PathLike[str] | ExperimentCollection,
                 experiment_info: Mapping[str, Any] | None = None, /, *, quiet: bool = True, **info: Any) -> None:
        super().__init__()
        self.collection = collection if isinstance(collection, ExperimentCollection) \
            else ExperimentCollection(collection, quiet=quiet)
        self.info = stored_info({**(experiment_info or {}), **info}, MODEL_KEYS)
        self.experiment: Experiment | None = None
        self._stringified: set[str] = set()  # logged keys stored as their text, warned of once
        self._reset()

    def _reset(self) -> None:
        # (id(model), id(optimizer)) -> (the model, the optimizer, its recorder): the first two as
        # weak references, so that a collected model's id, reused, is not taken for it.
        self._models: dict[tuple[int, int], tuple[Callable[[], Any], Callable[[], Any], Recorder]] = {}
        self._model_count = 0
        self._calls = {"fit": 0, "evaluate": 0, "predict": 0}
        self._open: dict[str, list[Recorder]] = {}  # kind -> its stage recorders, while the call runs
        self._current: Recorder | None = None
        self._train = self._validate = self._test = self._predict = None
        self._optimizer: Any = None
        self._step = 0  # optimizer steps taken before the coming batch
        self._epoch = 0
        self._last_batch = -1
        self._learning_rate: float | None = None
        self._rate: _RateReader | None = None
        self._schedule: Any = None  # the optimizer's learning-rate schedule, if it has one
        self._epoch_rates: list[float] | None = None  # the schedule's rate at each batch of the epoch
        self._new_call = False  # set_model ran: a top-level fit/evaluate/predict is starting

    # -- the experiment ------------------------------------------------------------------

    @property
    def recorder(self) -> Recorder:
        """The running stage's recorder (values ``add()``-ed go into its next record).

        Outside a call: the experiment recorder; before the first call, a recorder that drops values.
        """
        if self._current is not None:
            return self._current
        return self.experiment.recorder if self.experiment is not None else NullRecorder()

    def start(self) -> Experiment:
        """Start the experiment now (the first hook does it otherwise); returns it."""
        if self.experiment is None or self.experiment.finished:
            self._reset()
            self.experiment = self.collection.new_experiment(self.info)
        return self.experiment

    def finish(self, error: BaseException | None = None) -> None:
        """Finish the experiment: failed if ``error`` is given or a call was interrupted."""
        if self.experiment is None or self.experiment.finished:
            return
        interrupted = self._close_interrupted()
        self._current = None
        self.experiment.finish(error or interrupted)

    def __enter__(self) -> RigorousCallback:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.finish(error)

    def _close_interrupted(self) -> str | None:
        """Mark the calls that began and never ended as interrupted; the error text, if any."""
        kinds = list(self._open)
        for stage in (stage for stages in self._open.values() for stage in stages):
            stage["interrupted"] = True
        self._open.clear()
        _unfinished_calls.discard(self)
        return f"a {kinds[0]}() call was interrupted: its end hook never ran" if kinds else None

    def _begin(self, kind: str, stages: tuple[str, ...]) -> list[Recorder]:
        """Open a call of ``kind``: number it and make its stage recorders below the model's."""
        self._new_call = False
        if self.experiment is not None and self._open:
            self.finish()  # the last call was interrupted: that attempt failed, this one is new
        self.start()
        atexit.unregister(_finish_interrupted_at_exit)  # registered again after start() installed the core's
        atexit.register(_finish_interrupted_at_exit)  # exit hook: runs first, before that one finishes runs as ok
        _unfinished_calls.add(self)
        self._calls[kind] += 1
        model = self.model
        self._optimizer = getattr(model, "optimizer", None)
        self._step = int(getattr(self._optimizer, "iterations", 0))
        parent = self._model_recorder(model, self._optimizer)
        extra = {} if kind == "fit" else {"step": self._step, "learning_rate": _rate_of(self._optimizer)}
        recorders = [parent.sub_recorder(stage=stage, **{kind: self._calls[kind]}, **extra) for stage in stages]
        self._open[kind] = recorders
        return recorders

    def _model_recorder(self, model: Any, optimizer: Any) -> Recorder:
        """The recorder of this model with this optimizer, made at their first call."""
        key = (id(model), id(optimizer))
        known = self._models.get(key)
        if known is not None and known[0]() is model and known[1]() is optimizer:
            return known[2]
        self._model_count += 1
        parent = self.experiment.recorder.sub_recorder(_describe(model, optimizer), model_number=self._model_count)
        self._models[key] = (_reference(model), _reference(optimizer), parent)
        return parent

    def _end(self, kind: str) -> None:
        self._open.pop(kind, None)
        if not self._open:
            _unfinished_calls.discard(self)
        self._current = None
        self.experiment.flush()

    def set_model(self, model: Any) -> None:
        # Keras builds a CallbackList, which calls set_model, at the start of each top-level
        # fit/evaluate/predict; validation inside fit reuses fit's list and does not.
        super().set_model(model)
        self._new_call = True

    # -- fit -----------------------------------------------------------------------------

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        (self._train,) = self._begin("fit", ("train",))
        self._validate = None
        self._current = self._train
        self._schedule = _schedule_of(self._optimizer)
        self._rate = _RateReader(self._optimizer)

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epoch = epoch
        self._last_batch = -1
        self._step = int(getattr(self._optimizer, "iterations", self._step))  # BackupAndRestore restored it since
        self._current = self._train
        self._epoch_rates = self._rates_of_epoch()

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        # Read before the optimizer step: the learning rate this batch is trained with.
        if self._epoch_rates is not None and batch < len(self._epoch_rates):
            self._learning_rate = self._epoch_rates[batch]
        elif self._rate is not None:
            self._learning_rate = self._rate.now()

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
        first = int(optimizer.iterations)
        try:
            rates = keras.ops.convert_to_numpy(self._schedule(keras.ops.arange(first, first + steps, dtype="float32")))
        except Exception:  # noqa: BLE001 - a schedule written for one step at a time
            return None
        ends = [float(self._schedule(step)) for step in (first, first + steps - 1)]
        if rates.shape != (steps,) or [float(rates[0]), float(rates[-1])] != ends:
            return None
        return [float32_seen(float(rate)) for rate in rates]

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._step += batch - self._last_batch  # more than 1 with steps_per_execution > 1
        self._last_batch = batch
        _commit(self._train, seen_logs(logs), {"step": self._step - 1, "epoch": self._epoch, "batch_idx": batch,
                                               "level": STEP, "learning_rate": self._learning_rate,
                                               "wall_time": time.time()}, self._stringified)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = seen_logs(logs)
        ours = {"step": self._step - 1, "epoch": epoch, "level": EPOCH, "learning_rate": self._learning_rate,
                "wall_time": time.time()}
        validation = {key: logs.pop(key) for key in list(logs) if key.startswith("val_")}
        commit_row(add_logged(self._train, logs, self._stringified, "Keras"), ours)
        if validation and self._validate is not None:
            commit_row(add_logged(self._validate, validation, self._stringified, "Keras"), ours)
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
            _commit(self._test, seen_logs(logs, "val_"), {"step": self._step - 1, "epoch": self._epoch,
                                                          "batch_idx": batch, "level": BATCH,
                                                          "learning_rate": self._learning_rate,
                                                          "wall_time": time.time()}, self._stringified)
        else:
            _commit(self._test, seen_logs(logs), {"batch_idx": batch, "level": BATCH, "wall_time": time.time()},
                    self._stringified)

    def on_test_end(self, logs: dict[str, Any] | None = None) -> None:
        if self._test is self._validate:
            self._current = self._train  # until on_epoch_end commits the epoch's records
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
        commit_row(self._predict, {"batch_idx": batch, "level": BATCH, "samples": samples, "wall_time": time.time()})

    def on_predict_end(self, logs: dict[str, Any] | None = None) -> None:
        self._end("predict")

    def __repr__(self) -> str:
        return f"RigorousCallback({str(self.collection.path)!r}, experiment={self.experiment!r})"


def _finish_interrupted_at_exit() -> None:
    """At the process's exit: end as failed the experiments whose call never ended (its exception was
    caught), with the reason the process ends for if it has one (a signal)."""
    for callback in list(_unfinished_calls):
        callback.finish(why_process_ends())


def _commit(recorder: Recorder, logged: dict[str, Any], ours: dict[str, Any], stringified: set[str]) -> None:
    """Commit one record of Keras's ``logged`` values (a dict of ours to change) and the callback's.

    One ``push`` when nothing is staged and no logged key is the callback's (every batch,
    usually); otherwise ``commit_row``, which keeps a clashing value under ``user/<key>``. A logged
    value a record cannot store (a complex number) is stored as its text, with one warning per key
    (``stringified``: the keys warned of), as Keras's CSVLogger writes it.
    """
    if recorder.staged or not ours.keys().isdisjoint(logged):
        commit_row(add_logged(recorder, logged, stringified, "Keras"), ours)
    else:
        logged.update(ours)
        try:
            recorder.push(logged)
        except UnsupportedValueError:  # raised before anything was recorded
            recorder.push(storable_logs(logged, stringified, "Keras"))


def _reference(thing: Any) -> Callable[[], Any]:
    """A weak reference to ``thing``, or a callable that returns it where it cannot have one (None)."""
    try:
        return weakref.ref(thing)
    except TypeError:
        return lambda: thing


class _RateReader:
    """An optimizer's learning rate as Keras shows it, read before each batch.

    ``float(optimizer.learning_rate)`` and the rounding were most of the callback's cost per
    batch of a tiny model (the property and the variable's ``value`` check scopes that never
    apply between batches). So a plain rate is read from its variable's backend value, while
    the optimizer still holds that variable (Keras's ``_learning_rate`` and ``_value``, checked
    against the public path first), and rounded again only when it changed. A rate the
    optimizer computes (a schedule, a callable), or a Keras where those names differ, is read
    through ``optimizer.learning_rate`` every time.
    """

    def __init__(self, optimizer: Any) -> None:
        self.optimizer = optimizer
        rate = getattr(optimizer, "learning_rate", None)
        self.variable = rate if isinstance(rate, keras.Variable) and self._held(rate) else None
        self.read: float | None = None
        self.seen: float | None = None

    def _held(self, variable: Any) -> bool:
        """Whether the optimizer holds ``variable`` as its rate and its backend value reads as the variable does."""
        try:
            return getattr(self.optimizer, "_learning_rate", None) is variable and \
                float(variable._value) == float(variable)  # noqa: SLF001
        except (AttributeError, TypeError, ValueError):
            return False

    def now(self) -> float | None:
        """The learning rate in force now; None when the optimizer has none."""
        variable = self.variable
        if variable is not None and getattr(self.optimizer, "_learning_rate", None) is variable:
            read = float(variable._value)  # noqa: SLF001 - still the optimizer's rate, outside any scope
        else:
            rate = getattr(self.optimizer, "learning_rate", None)
            if rate is None:
                return None
            read = float(rate)
        if read != self.read:
            self.read, self.seen = read, float32_seen(read)
        return self.seen


def _rate_of(optimizer: Any) -> float | None:
    """The optimizer's learning rate now (a schedule's value at its step), as Keras shows it.

    >>> _rate_of(keras.optimizers.Adam(0.005))  # its variable holds the float32 0.004999999888241291
    0.005
    """
    rate = getattr(optimizer, "learning_rate", None)
    return None if rate is None else float32_seen(float(rate))  # a variable or a tensor: 3 us, not 30


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
    """The model recorder's data: names, parameter count, the optimizer and its config (flattened)."""
    data: dict[str, Any] = {"model": getattr(model, "name", type(model).__name__)}
    try:
        data["parameters"] = int(model.count_params())
    except ValueError:  # a model not built yet
        data["parameters"] = None
    if optimizer is None:
        return data
    config = optimizer.get_config()
    config.pop("name", None)
    schedule = config.pop("learning_rate", None)
    data.update(optimizer=type(optimizer).__name__, learning_rate=_rate_of(optimizer),
                **seen_logs(flattened(config)))
    if not isinstance(schedule, _PLAIN):  # a schedule: its config (the rate above is its value now)
        data["learning_rate_schedule"] = json.dumps(schedule, sort_keys=True, default=str)
    return data
