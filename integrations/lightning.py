"""RigorousLogger: a Lightning logger that records into an ExperimentCollection.

``Trainer(logger=RigorousLogger("data/my_study", lr=1e-3))`` is all the set-up. The tree::

    experiment    the experiment info (collection bookkeeping above it)
    └── model     model, model_number, parameters, session, version, and that module's hparams
        └── stage stage = train | validate | test | predict | sanity_check

Works with ``lightning.pytorch`` (tried first) and ``pytorch_lightning``; a Trainer of either
accepts the logger, because Lightning duck-types its loggers.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
import uuid
import weakref
from argparse import Namespace
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rigorous_recorder import Experiment, ExperimentCollection, Recorder
from rigorous_recorder.experiment import running_experiment
from rigorous_recorder.store.layout import RUNS_FOLDER, SUFFIX

from ._common import (BATCH, EPOCH, STEP, NullRecorder, add_logged, commit_row, flattened, hyperparameters,
                      stored_info)


def _lightning() -> Any:
    """The Lightning package to build on: the one the program imported (importing the other as well
    costs a second or more), else the unified ``lightning.pytorch`` first, as dvclive and aim do."""
    names = ["lightning.pytorch", "pytorch_lightning"]
    if "pytorch_lightning" in sys.modules and "lightning.pytorch" not in sys.modules:
        names.reverse()
    for name in names:
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError:
            continue
    raise ModuleNotFoundError("RigorousLogger needs Lightning: pip install 'rigorous-recorder[lightning]'",
                              name="pytorch_lightning")


_pl = _lightning()
Callback, Logger, rank_zero_only = _pl.callbacks.Callback, _pl.loggers.logger.Logger, _pl.utilities.rank_zero_only
rank_zero_experiment = _pl.loggers.logger.rank_zero_experiment

__all__ = ["RigorousLogger", "recorder_of"]

#: The checkpoint key that carries the run's identity (see RigorousLogger, "Resuming").
CHECKPOINT_KEY = "rigorous_recorder"
#: Keys the logger sets on the model and stage recorders.
MODEL_KEYS = frozenset({"model", "model_number", "parameters", "session", "version", "stage"})


def recorder_of(trainer: Any) -> Recorder:
    """The running stage's recorder of the RigorousLogger among ``trainer.loggers`` (a Trainer's or a Fabric's).

    Values ``add()``-ed to it during a batch join that batch's record (under Fabric, the next
    ``log_dict`` record). When nothing records (``fast_dev_run``, ``logger=False``, no
    RigorousLogger, ranks other than zero), a recorder that drops everything: the same code
    runs in every trainer configuration.
    """
    for logger in getattr(trainer, "loggers", None) or ():
        if isinstance(logger, RigorousLogger):
            return logger.recorder
    return NullRecorder()


class RigorousLogger(Logger):
    """Record a Lightning run into an ExperimentCollection, one record per optimizer step.

    Example::

        logger = RigorousLogger("data/my_study", lr=1e-3)
        trainer = Trainer(logger=logger, max_epochs=3)
        trainer.fit(model, datamodule)
        logger.collection.sql("SELECT epoch, val_loss FROM records WHERE level = 'epoch' AND stage = 'validate'")

    Args:
        collection: a path (``"data/my_study"`` stores in ``data/my_study.collection``) or an
            existing :class:`~rigorous_recorder.ExperimentCollection`.
        name: the checkpoint folder name under :attr:`save_dir` (default: the collection's name).
        version: the checkpoint sub-folder, ``<save_dir>/<name>/<version>/checkpoints``; give
            the earlier logger's version to resume with ``ckpt_path`` (default: a new one).
        quiet: passed to the collection when ``collection`` is a path: ``False`` prints on stderr
            where each run starts and where it was saved (by default nothing, as Lightning's CSVLogger).
        **info: the experiment info, stored on the experiment recorder.

    Records: each optimizer step is one record of stage ``train`` (``level='step'``): ``step``
    (Lightning's global step), ``epoch``, ``batch_idx``, ``wall_time`` (``time.time()`` when
    the record was closed), the metrics logged for it (the LearningRateMonitor's too) and what
    was ``add()``-ed to :func:`recorder_of` during its batches. Each evaluation or predict batch
    is one record (``level='batch'``, with ``dataloader_idx``); epoch-end metrics are records of
    ``level='epoch'`` in their stage.

    Each Trainer call records below a model recorder holding that module's hyperparameters;
    a later call with the same module and hyperparameters shares it. A failed call ends the
    experiment as failed; the next call on this logger starts a new attempt (same
    experiment number, next error number). Success only flushes: the process's exit (or
    :meth:`finish`) ends the experiment. Only rank zero records.

    Resuming: the run id travels in every checkpoint; ``fit(ckpt_path=...)`` continues that
    run, in a new model recorder whose ``session`` tells the new rows from the earlier ones.
    Give the same ``version`` so that ModelCheckpoint finds its folder and keeps its state.

    ``Trainer(enable_autolog_hparams=False)`` never calls the hook that attaches the logger:
    pass ``callbacks=[logger.callback]`` to such a Trainer.
    """

    def __init__(self, collection: str | os.PathLike[str] | ExperimentCollection, *, name: str | None = None,
                 version: str | None = None, quiet: bool = True, **info: Any) -> None:
        super().__init__()
        given = collection if isinstance(collection, ExperimentCollection) else None
        text = os.fspath(collection.path if given is not None else collection)
        self._path = Path(text if text.endswith(SUFFIX) else text + SUFFIX).absolute()
        self._quiet = quiet
        self._name = name or self._path.name.removesuffix(SUFFIX)
        self._version = version or f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        self._info = stored_info(info, MODEL_KEYS)
        self._origin_pid = os.getpid()  # a run in another process is a worker's: it ends with the call
        self._run_folder: Path | None = None
        self._stringified: set[str] = set()  # metrics stored as their text, warned of once
        self.callback = _Companion(self)
        self._forget(given)

    def _forget(self, collection: ExperimentCollection | None = None) -> None:
        """(Re)set what lives only in this process: collection, experiment, recorders, trainer."""
        self._collection = collection
        self._experiment: Experiment | None = None
        self._experiment_pid = os.getpid()
        self._trainer: Any = None  # the Trainer of the running call, on rank zero only
        self._module: Any = None  # weak reference to the LightningModule of the current call
        self._hparams: dict[str, Any] = {}  # logged for the coming call
        self._model_data: dict[str, Any] | None = None  # the model recorder the current call needs
        self._model: Recorder | None = None
        self._stages: dict[str, Recorder] = {}  # emptied whenever the experiment or model recorder changes
        self._rows: dict[str, dict[str, Any]] = {}  # stage -> the adapter's values of its open record
        self._epoch_end: set[str] = set()  # stages whose epoch-end metrics are arriving
        self._resume_id: str | None = None
        self._in_call = False  # between a Trainer call's log_graph and its finalize
        self._stage_seen: Any = None  # the trainer's last RunningStage, and its name below
        self._stage_name: str | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        runtime = RigorousLogger.__new__(RigorousLogger)
        runtime._forget()
        state.update(runtime.__dict__)  # no locks, threads, open files or weak references
        return state

    # -- Lightning's Logger contract -------------------------------------------------------

    @property
    def name(self) -> str:
        """The checkpoint folder name (the collection's name unless given)."""
        return self._name

    @property
    def version(self) -> str:
        """The checkpoint sub-folder; known before any run starts."""
        return self._version

    @property
    def save_dir(self) -> str:
        """The folder that holds the collection; checkpoints go below it."""
        return str(self._path.parent)

    @property
    def root_dir(self) -> str:
        """``<save_dir>/<name>``."""
        return os.path.join(self.save_dir, self.name)

    @property
    def log_dir(self) -> str:
        """``<save_dir>/<name>/<version>``: where checkpoints go."""
        return os.path.join(self.root_dir, self.version)

    @property
    def collection(self) -> ExperimentCollection:
        """The ExperimentCollection this logger records into."""
        if self._collection is None:
            self._collection = ExperimentCollection(self._path, quiet=self._quiet)
        return self._collection

    @property
    @rank_zero_experiment
    def experiment(self) -> Experiment | None:
        """The running :class:`~rigorous_recorder.Experiment`; None until the first record."""
        return self._own_experiment()

    @property
    def recorder(self) -> Recorder:
        """The running stage's recorder (see :func:`recorder_of`); outside a stage, the model's; without
        a Trainer (Lightning Fabric), the experiment's, whose values join the next ``log_dict`` record."""
        if rank_zero_only.rank != 0:
            return NullRecorder()
        if (stage := self._stage()) is not None:
            return self._stage_recorder(stage)
        return self._ensure_experiment().recorder if self._model_data is None else self._model_recorder()

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        """Store hyperparameters on the running call's model recorder, else keep them for the next call's
        (without a Trainer, as under Lightning Fabric: the experiment's, at the next record or at finish)."""
        if self._in_call:
            self._model_recorder().update(hyperparameters(flattened(params), MODEL_KEYS, self._info))
        else:  # Lightning logs them at the start of each call, before log_graph
            self._hparams.update(flattened(params))

    @rank_zero_only
    def log_graph(self, model: Any, input_array: Any = None) -> None:
        """Called by Lightning at the start of every run: find the Trainer, attach the callback."""
        if (trainer := getattr(model, "_trainer", None)) is not None:
            self._attach(trainer, model)

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Merge Lightning's metrics into the open record of their stage (an epoch's end: its own record)."""
        stage = self._stage()
        if stage is None:  # Lightning Fabric, or called by hand: one record below the experiment
            self._store_pending_hparams()
            commit_row(self._add(self._ensure_experiment().recorder, metrics), {"step": step, "wall_time": time.time()})
        elif stage in self._epoch_end:
            self._commit(stage)
            commit_row(self._add(self._stage_recorder(stage), metrics), {
                "step": step, "epoch": self._trainer.current_epoch, "level": EPOCH, "wall_time": time.time()})
        else:
            row = self._rows.get(stage)
            if row is None or (step is not None and row["step"] != step and stage == "train"):
                self._open(stage, self._trainer.fit_loop.epoch_loop._batches_that_stepped if step is None else step)
            self._add(self._stage_recorder(stage), metrics)

    def _add(self, recorder: Recorder, metrics: Mapping[str, Any]) -> Recorder:
        """Stage ``metrics``; one a record cannot store (a complex number logged by hand) as its text, with a
        warning, as CSVLogger keeps it: the run goes on."""
        return add_logged(recorder, metrics, self._stringified, "Lightning")

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """After each Trainer call: flush on success; after an exception, end the experiment as failed
        with it (Lightning calls this in its ``except`` block)."""
        self._in_call = False
        if status == "failed":
            self.finish(sys.exc_info()[1] or "the Lightning run failed")
        elif os.getpid() != self._origin_pid:  # a ddp_spawn or fork worker, about to end
            self.finish()
        else:
            self._commit_all()
            if (experiment := self._own_experiment()) is not None:
                experiment.flush()

    def finish(self, error: BaseException | str | None = None) -> None:
        """End the experiment now, as failed when ``error`` is given; a later call on this logger starts a new one."""
        self._commit_all()
        self._store_pending_hparams()
        if (experiment := self._own_experiment()) is not None:
            experiment.finish(error)
        self._model, self._stages = None, {}

    # -- the run and its recorders ------------------------------------------------------------

    def _store_pending_hparams(self) -> None:
        """Hyperparameters logged outside a Trainer call and taken by none: on the experiment recorder."""
        if self._hparams:
            hparams, self._hparams = self._hparams, {}
            self._ensure_experiment().recorder.update(hyperparameters(hparams, MODEL_KEYS, self._info))

    def _attach(self, trainer: Any, module: Any) -> None:
        """Start of a Trainer call: take its Trainer and module; read the run id of a loaded checkpoint."""
        self._commit_all()
        self._trainer = trainer
        if self.callback not in trainer.callbacks:
            trainer.callbacks.insert(0, self.callback)  # first: it opens a batch's row before others log
        loaded = getattr(trainer._checkpoint_connector, "_loaded_checkpoint", None) or {}
        if CHECKPOINT_KEY in loaded:
            self._resume_id = loaded[CHECKPOINT_KEY].get("run_id")
        hparams, self._hparams = self._hparams, {}
        data = {"model": type(module).__name__, "parameters": sum(p.numel() for p in module.parameters()),
                "version": self._version, **hyperparameters(hparams, MODEL_KEYS, self._info)}
        same_module = self._module is not None and self._module() is module
        if not (same_module and data == self._model_data) or self._resume_id is not None \
                or self._experiment_pid != os.getpid():
            self._model, self._stages = None, {}
        self._module = weakref.ref(module)
        self._model_data = data
        self._in_call = True

    def _ensure_experiment(self) -> Experiment:
        """The experiment to record into: the running one, a resumed one, or a new attempt."""
        experiment, wanted = self._own_experiment(), self._resume_id
        self._resume_id = None
        if experiment is not None and not experiment.finished and wanted in (None, experiment.id):
            return experiment
        if experiment is not None:
            experiment.finish()  # a checkpoint of another run was loaded: this one is done
        folder = self._path / RUNS_FOLDER / wanted if wanted else self._run_folder
        experiment = running_experiment(folder) if folder is not None else None  # a copy of this logger's
        if experiment is None:
            experiment = self.collection.resume(wanted) if wanted else self.collection.new_experiment(self._info)
        self._experiment, self._run_folder, self._experiment_pid = experiment, experiment.folder.path, os.getpid()
        self._model, self._stages = None, {}
        return experiment

    def _own_experiment(self) -> Experiment | None:
        """The experiment, unless a fork copied it from the process that records it."""
        return self._experiment if self._experiment_pid == os.getpid() else None

    def _model_recorder(self) -> Recorder:
        experiment = self._ensure_experiment()
        if self._model is None:
            parent = experiment.recorder
            number = 1 + sum("model_number" in child.local_data for child in parent.children)
            self._model = parent.sub_recorder(self._model_data or {}, model_number=number,
                                              session=experiment.info.get("session", 1))
            self._stages = {}
        return self._model

    def _stage_recorder(self, stage: str) -> Recorder:
        recorder = self._stages.get(stage)
        if recorder is None:
            model = self._model_recorder()  # a new model recorder comes with no stages
            recorder = self._stages[stage] = model.sub_recorder(stage=stage)
        return recorder

    def _stage(self) -> str | None:
        """The running stage's name (``train``, ``validate``, ...), None outside a Trainer call."""
        stage = self._trainer.state.stage if self._trainer is not None else None
        if stage is not self._stage_seen:  # reading an enum's value is slow: once per stage change
            self._stage_seen, self._stage_name = stage, None if stage is None else str(stage.value)
        return self._stage_name

    def _open(self, stage: str, step: int, batch_idx: int | None = None, dataloader_idx: int | None = None) -> None:
        """Commit the stage's open record and open the next (the adapter's values go in at commit)."""
        self._commit(stage)
        row = {"step": step, "epoch": self._trainer.current_epoch, "batch_idx": batch_idx,
               "level": STEP if stage == "train" else BATCH}
        if dataloader_idx is not None:
            row["dataloader_idx"] = dataloader_idx
        self._rows[stage] = row

    def _commit(self, stage: str) -> None:
        if (row := self._rows.pop(stage, None)) is not None:
            row["wall_time"] = time.time()
            commit_row(self._stage_recorder(stage), row)

    def _commit_all(self) -> None:
        for stage in list(self._rows):
            self._commit(stage)


class _Companion(Callback):
    """The batch and epoch hooks of a RigorousLogger; the logger puts it first in the Trainer's callbacks.

    Only the Trainer the logger attached to (on rank zero) is served. Lightning overwrites the
    attributes ``log`` and ``log_dict`` of every callback: none here.
    """

    def __init__(self, logger: RigorousLogger) -> None:
        self.logger = logger

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        logger = self.logger
        if logger._trainer is trainer:
            step = trainer.fit_loop.epoch_loop._batches_that_stepped
            row = logger._rows.get("train")
            if row is not None and row["step"] == step:  # gradient accumulation, or metrics logged ahead
                row["batch_idx"] = batch_idx
            else:
                logger._open("train", step, batch_idx)

    def on_validation_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int,
                                  dataloader_idx: int = 0) -> None:
        logger = self.logger
        if logger._trainer is trainer and (stage := logger._stage()) is not None:
            logger._open(stage, trainer.fit_loop.epoch_loop._batches_that_stepped, batch_idx, dataloader_idx)

    def _boundary(self, trainer: Any, *args: Any, **kwargs: Any) -> None:
        if (logger := self.logger)._trainer is trainer:
            logger._commit_all()
            logger._epoch_end.discard(logger._stage())

    def _end_of_epoch(self, trainer: Any, *args: Any) -> None:
        logger = self.logger
        if logger._trainer is trainer and (stage := logger._stage()) is not None:
            logger._commit(stage)
            logger._epoch_end.add(stage)

    on_test_batch_start = on_predict_batch_start = on_validation_batch_start
    on_train_epoch_start = on_validation_start = on_test_start = on_predict_start = teardown = _boundary
    on_train_epoch_end = on_validation_epoch_end = on_test_epoch_end = on_predict_epoch_end = _end_of_epoch

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        # Passed by hand to a Trainer(enable_autolog_hparams=False), which never calls log_graph.
        if trainer.is_global_zero and not trainer.enable_autolog_hparams and self.logger in trainer.loggers:
            self.logger._attach(trainer, pl_module)

    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        experiment = self.logger._own_experiment()
        checkpoint[CHECKPOINT_KEY] = {"run_id": experiment.id if experiment is not None else None,
                                      "version": self.logger.version}

    def on_load_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        # Reached by strategies that restore after setup, and by later calls on one Trainer.
        if CHECKPOINT_KEY in checkpoint:
            self.logger._resume_id = checkpoint[CHECKPOINT_KEY].get("run_id")


# Lightning calls a callback's hook only when it is callable (``_call_callback_hooks``): the hooks
# the companion does not use are None, so that a training step costs one hook call, not six.
for _hook in [name for name in vars(Callback) if name.startswith("on_") and name not in vars(_Companion)]:
    setattr(_Companion, _hook, None)
