"""RigorousLogger: a Lightning logger that records into an ExperimentCollection.

``Trainer(logger=RigorousLogger("data/my_study", lr=1e-3))`` is all the set-up. The tree::

    experiment    collection bookkeeping, the experiment info, the hyperparameters
    └── model     model = the LightningModule class name, parameters = parameter count
        └── stage stage = train | validate | test | predict | sanity_check

Works with ``lightning.pytorch`` (tried first) and ``pytorch_lightning``; a Trainer of either
accepts the logger, because Lightning duck-types its loggers.
"""

from __future__ import annotations

import atexit
import os
import shutil
import weakref
from argparse import Namespace
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rigorous_recorder import Experiment, ExperimentCollection, Recorder

try:  # the unified package first, as dvclive and aim do
    from lightning.pytorch.callbacks import Callback
    from lightning.pytorch.loggers import Logger
    from lightning.pytorch.utilities import rank_zero_only
except ModuleNotFoundError:
    try:
        from pytorch_lightning.callbacks import Callback
        from pytorch_lightning.loggers import Logger
        from pytorch_lightning.utilities import rank_zero_only
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(
            "RigorousLogger needs Lightning: pip install 'rigorous-recorder[lightning]'", name="pytorch_lightning"
        ) from error

__all__ = ["RigorousLogger"]

#: The checkpoint key that carries the run's identity (see RigorousLogger, "Resuming").
CHECKPOINT_KEY = "rigorous_recorder"
_BATCH_HOOK_STAGES = ("train", "validate", "test", "predict", "sanity_check")


class RigorousLogger(Logger):
    """Record a Lightning run into an ExperimentCollection, one record per batch.

    Example::

        logger = RigorousLogger("data/my_study", lr=1e-3)
        trainer = Trainer(logger=logger, max_epochs=3)
        trainer.fit(model, datamodule)
        trainer.test(model, datamodule)
        logger.collection.sql("SELECT stage, epoch, avg(train_loss_step) FROM records GROUP BY ALL")

    Args:
        collection: a path (``"data/my_study"`` stores in ``data/my_study.collection``) or an
            existing :class:`~rigorous_recorder.ExperimentCollection`.
        name: the folder name for checkpoints under :attr:`save_dir` (default: the
            collection's name); checkpoints land beside the collection, in
            ``<save_dir>/<name>/<run id>/checkpoints``.
        quiet: passed to the collection when ``collection`` is a path.
        **info: the experiment info, stored on the experiment recorder.

    What is recorded:
        Every train, validation, test and predict batch commits one record into its stage's
        recorder, at the end of that batch, whatever ``log_every_n_steps`` is. The record
        holds ``step`` (Lightning's logging step, ``_batches_that_stepped``), ``epoch``,
        ``batch_idx``, ``dataloader_idx`` (evaluation and predict), what you ``add()``ed to
        ``self.logger.recorder`` during the batch, and the metrics Lightning logged for that
        batch under Lightning's names (``train_loss_step``...; on the steps Lightning logs).
        Epoch-end metrics (``train_loss_epoch``, ``val_loss``) are a record of their own.
        Use ``add()`` during a batch (in ``training_step`` or any batch-end hook); ``push()``
        makes a record of its own.
        Sanity-check batches go to the stage ``sanity_check``, never to ``validate``.
        When a new Trainer is used with the same logger, its steps are shifted past the
        steps already recorded, so steps stay monotonic within a stage.

    Lifetime:
        The experiment starts when the Trainer first touches :attr:`experiment` (at the start
        of ``fit``/``validate``/``test``/``predict``). Lightning calls ``finalize("success")``
        after every one of those, so success only flushes to disk: the same logger can go on
        with ``test()`` and another ``fit()`` in the same experiment. The experiment is
        finished (compacted to Parquet, marked ok) by :meth:`finish`, or when the process
        exits. An exception (KeyboardInterrupt too) finishes it at once, marked
        ``had_error``, with its data kept; the exception is not touched. A later run on the
        same logger reopens it with ``collection.resume``.

    Resuming:
        The run id travels in every checkpoint (key ``"rigorous_recorder"``).
        ``trainer.fit(model, ckpt_path=...)`` in a new process continues the same experiment,
        steps continuing where they stopped. The run that process had started before it read
        the checkpoint holds nothing yet and is removed.

    Requirements and limits:
        ``Trainer(enable_autolog_hparams=False)`` never calls the hook this logger uses to
        find its Trainer; then pass the callback yourself:
        ``Trainer(logger=logger, callbacks=[logger.callback], enable_autolog_hparams=False)``.
        Under DDP only rank zero records; ``self.logger.recorder`` on other ranks accepts
        values and drops them.
    """

    def __init__(self, collection: str | os.PathLike[str] | ExperimentCollection, *,
                 name: str | None = None, quiet: bool = True, **info: Any) -> None:
        super().__init__()
        if isinstance(collection, ExperimentCollection):
            self._collection: ExperimentCollection | None = collection
            self._path = collection.path
        else:
            self._collection = None
            text = os.fspath(collection)
            self._path = Path(text if text.endswith(".collection") else text + ".collection").absolute()
        self._quiet = quiet
        self._name = name or self._path.name.removesuffix(".collection")
        self._info = info
        self._experiment: Experiment | None = None
        self._placeholder = False  # started by this process, nothing recorded yet
        self._hparams: dict[str, Any] = {}
        self._model: Recorder | None = None
        self._stages: dict[str, Recorder] = {}
        self._trainer: Any = None
        self._step_base = 0
        self._max_step = -1
        self._pending: Recorder | None = None
        self.callback = _Companion(self)
        self._exit_hook: Any = None

    # -- Lightning's Logger contract -------------------------------------------------------

    @property
    def name(self) -> str:
        """The checkpoint folder name (the collection's name unless given)."""
        return self._name

    @property
    def version(self) -> str:
        """The run id of the experiment (the checkpoint sub-folder)."""
        experiment = self.experiment
        return experiment.id if isinstance(experiment, Experiment) else ""

    @property
    def save_dir(self) -> str:
        """The folder that holds the collection; checkpoints go below it."""
        return str(self._path.parent)

    @property
    def root_dir(self) -> str:
        return os.path.join(self.save_dir, self.name)

    @property
    def log_dir(self) -> str:
        return os.path.join(self.root_dir, self.version)

    @property
    def collection(self) -> ExperimentCollection:
        """The ExperimentCollection this logger records into."""
        if self._collection is None:
            self._collection = ExperimentCollection(self._path, quiet=self._quiet)
        return self._collection

    @property
    def experiment(self) -> Experiment | None:
        """The running :class:`~rigorous_recorder.Experiment`, started on first access (rank zero only)."""
        if rank_zero_only.rank != 0:
            return None
        if self._experiment is None:
            self._experiment = self.collection.new_experiment(self._info)
            self._placeholder = True
            self._register_exit()
        elif self._experiment.finished:
            self._experiment = self.collection.resume(self._experiment.id)
            self._rebind()
            self._register_exit()
        return self._experiment

    @property
    def recorder(self) -> Recorder:
        """The recorder of the running stage; values ``add()``ed during a batch join its record.

        Outside a run: the experiment recorder. On ranks other than zero: a throw-away recorder.
        """
        if rank_zero_only.rank != 0:
            return Recorder()
        trainer = self._trainer
        stage = getattr(getattr(trainer, "state", None), "stage", None)
        if stage is None or self._model is None:
            return self.experiment.recorder
        self._placeholder = False
        return self._stage(stage.value)

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        """Store each hyperparameter as its own key of the experiment recorder."""
        flat = _flatten(vars(params) if isinstance(params, Namespace) else dict(params))
        self._hparams.update(flat)
        if self._model is not None:  # else kept until log_graph has chosen the run
            self.experiment.recorder.update(flat)

    @rank_zero_only
    def log_graph(self, model: Any, input_array: Any = None) -> None:
        """Called by Lightning at the start of every run: find the Trainer, attach the callback."""
        trainer = getattr(model, "_trainer", None) or getattr(model, "trainer", None)
        if trainer is not None:
            self._attach(trainer, model)

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Merge Lightning's metrics into the running batch's record, else record them alone."""
        if self._model is None:
            self.recorder.push(metrics)
            return
        stage = self._trainer.state.stage
        recorder = self._stage("train" if stage is None else stage.value)
        pending = self._pending
        if pending is recorder:  # the step metrics of the batch that just ended
            self._pending = None
            recorder.add(metrics)
            recorder.commit()
            return
        if pending is not None:
            self._commit()
        if step is not None:
            step += self._step_base
            self._max_step = max(self._max_step, step)
        recorder.add(metrics, step=step)
        recorder.commit()

    def save(self) -> None:
        """Nothing to do: the collection flushes in the background (Lightning calls this per log)."""

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """Flush after success (the experiment goes on); finish as failed after an exception."""
        self._commit()
        experiment = self._experiment
        if experiment is None or experiment.finished:
            return
        if status == "failed":
            error = getattr(self.callback, "error", None) or RuntimeError("the Lightning run failed")
            self.callback.error = None
            experiment.finish(error)
        else:
            experiment.flush()

    def finish(self) -> None:
        """Finish the experiment now, as a success: compact it to Parquet. A later run resumes it."""
        self._commit()
        if self._experiment is not None and not self._experiment.finished:
            if self._hparams and self._model is None:  # logged by hand, no run since
                self._experiment.recorder.update(self._hparams)
            self._experiment.finish()

    close = finish

    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        """Checkpoints are written by Lightning beside the collection; nothing to record."""

    # -- internals ---------------------------------------------------------------------------

    def _register_exit(self) -> None:
        if self._exit_hook is None:
            reference = weakref.ref(self)

            def finish_at_exit() -> None:
                logger = reference()
                if logger is not None:
                    logger.finish()

            self._exit_hook = finish_at_exit
            atexit.register(finish_at_exit)

    def _attach(self, trainer: Any, model: Any) -> None:
        self._commit()
        # The checkpoint given as ckpt_path is loaded (and our callback's state with it) by now.
        connector = getattr(trainer, "_checkpoint_connector", None)
        if CHECKPOINT_KEY in (loaded := getattr(connector, "_loaded_checkpoint", None) or {}):
            self._adopt(loaded[CHECKPOINT_KEY], trainer)
        elif trainer is not self._trainer and self._max_step >= 0:
            self._step_base = self._max_step + 1  # a new Trainer: keep steps monotonic
        self._trainer = trainer
        if self.callback not in trainer.callbacks:
            # First, so that its batch-start hook commits before other callbacks add values.
            trainer.callbacks.insert(0, self.callback)
        experiment = self.experiment
        if self._hparams:
            experiment.recorder.update(self._hparams)
        name = type(model).__name__
        if self._model is None or self._model.local_data.get("model") != name:
            self._model = next((child for child in experiment.recorder.children
                                if child.local_data.get("model") == name), None)
            if self._model is None:
                self._model = experiment.recorder.sub_recorder(model=name)
            self._stages = {child.local_data["stage"]: child for child in self._model.children
                            if "stage" in child.local_data}
        self._model["parameters"] = sum(parameter.numel() for parameter in model.parameters())

    def _adopt(self, state: Mapping[str, Any], trainer: Any) -> None:
        """Continue the run named in a checkpoint (the state written by ``_Companion``)."""
        self._step_base = state.get("step_base", 0)
        self._max_step = max(self._max_step, state.get("max_step", -1))
        current = self._experiment
        if current is not None and current.id == state["run_id"]:
            return
        collection = self.collection
        if current is not None and self._placeholder and not current.finished:
            current.finish()
            shutil.rmtree(current.folder.path, ignore_errors=True)
            for callback in trainer.checkpoint_callbacks:  # resolved from the placeholder's id
                if callback.dirpath and current.id in str(callback.dirpath):
                    callback.dirpath = str(callback.dirpath).replace(current.id, state["run_id"])
        elif current is not None and not current.finished:
            current.finish()
        self._experiment = collection.resume(state["run_id"])
        self._placeholder = False
        self._register_exit()
        self._rebind()

    def _rebind(self) -> None:
        """After ``resume``: the recorders are new objects; find the model and stages again."""
        name = None if self._model is None else self._model.local_data.get("model")
        self._model, self._stages, self._pending = None, {}, None
        if name is not None:
            self._model = next((child for child in self._experiment.recorder.children
                                if child.local_data.get("model") == name), None)
            if self._model is not None:
                self._stages = {child.local_data["stage"]: child for child in self._model.children
                                if "stage" in child.local_data}

    def _stage(self, stage: str) -> Recorder:
        recorder = self._stages.get(stage)
        if recorder is None:
            recorder = self._stages[stage] = self._model.sub_recorder(stage=stage)
        return recorder

    def _batch_end(self, stage: str, batch_idx: int, dataloader_idx: int | None) -> None:
        """Stage the batch's record: committed with the step metrics Lightning logs next, or, if
        Lightning logs none for this batch, at the next batch start, validation start or epoch end."""
        if self._model is None:
            return
        self._commit()
        self._placeholder = False
        trainer = self._trainer
        step = trainer.fit_loop.epoch_loop._batches_that_stepped + self._step_base
        self._max_step = max(self._max_step, step)
        recorder = self._stage(stage)
        if dataloader_idx is None:
            recorder.add(step=step, epoch=trainer.current_epoch, batch_idx=batch_idx)
        else:
            recorder.add(step=step, epoch=trainer.current_epoch, batch_idx=batch_idx, dataloader_idx=dataloader_idx)
        self._pending = recorder

    def _commit(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.commit()

    def _state(self) -> dict[str, Any]:
        experiment = self._experiment
        return {"run_id": experiment.id if experiment is not None else None,
                "step_base": self._step_base, "max_step": self._max_step}


class _Companion(Callback):
    """The batch-end hooks of a RigorousLogger; appended to the Trainer's callbacks by the logger.

    Lightning overwrites the attributes ``log`` and ``log_dict`` of every callback: none here.
    """

    def __init__(self, logger: RigorousLogger) -> None:
        self._logger = weakref.ref(logger)
        self.error: BaseException | None = None

    def _owner(self, trainer: Any) -> RigorousLogger | None:
        logger = self._logger()
        return logger if logger is not None and trainer.is_global_zero else None

    def _end(self, trainer: Any, stage: str, batch_idx: int, dataloader_idx: int | None) -> None:
        logger = self._owner(trainer)
        if logger is not None:
            if trainer.sanity_checking:
                stage = "sanity_check"
            logger._batch_end(stage, batch_idx, dataloader_idx)

    def _boundary(self, trainer: Any, *args: Any, **kwargs: Any) -> None:
        logger = self._owner(trainer)
        if logger is not None:
            logger._commit()

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._end(trainer, "train", batch_idx, None)

    def on_validation_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int,
                                dataloader_idx: int = 0) -> None:
        self._end(trainer, "validate", batch_idx, dataloader_idx)

    def on_test_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int,
                          dataloader_idx: int = 0) -> None:
        self._end(trainer, "test", batch_idx, dataloader_idx)

    def on_predict_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int,
                             dataloader_idx: int = 0) -> None:
        self._end(trainer, "predict", batch_idx, dataloader_idx)

    on_train_batch_start = on_validation_batch_start = on_test_batch_start = on_predict_batch_start = _boundary
    on_validation_start = on_train_epoch_end = on_validation_epoch_end = _boundary
    on_test_epoch_end = on_predict_epoch_end = on_sanity_check_end = teardown = _boundary

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        # Only matters when the user passed the callback (enable_autolog_hparams=False).
        logger = self._owner(trainer)
        if logger is not None and logger in trainer.loggers:
            logger._attach(trainer, pl_module)

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self.error = exception

    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        logger = self._logger()
        if logger is not None:
            checkpoint[CHECKPOINT_KEY] = logger._state()

    def on_load_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        # Reached only by strategies that restore after setup (the logger is attached by then).
        logger = self._logger()
        if logger is not None and trainer.is_global_zero and CHECKPOINT_KEY in checkpoint:
            logger._adopt(checkpoint[CHECKPOINT_KEY], trainer)


def _flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested hyperparameters as ``a/b`` keys; values that cannot be stored become their repr."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Namespace):
            value = vars(value)
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, name + "/"))
            continue
        try:
            flat.update(Recorder({name: value}).local_data)  # stored as the recorder would store it
        except (TypeError, ValueError):
            flat[name] = repr(value)
    return flat
