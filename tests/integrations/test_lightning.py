"""RigorousLogger with a real Trainer and a real tiny model."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import pytest

pl = pytest.importorskip("pytorch_lightning")
import torch  # noqa: E402

from rigorous_recorder import ExperimentCollection  # noqa: E402
from rigorous_recorder.integrations._common import NullRecorder  # noqa: E402
from rigorous_recorder.integrations.lightning import RigorousLogger, recorder_of  # noqa: E402

from . import lightning_tiny  # noqa: E402
from .lightning_tiny import TinyModel, loader, trainer  # noqa: E402

ROOT = Path(__file__).parents[2]
TRAIN_STEPS = "stage = 'train' AND level = 'step'"


def rows(logger, query):
    return logger.collection.sql(query).fetchall()


def run_script(*args, cwd):
    """``python -m tests.integrations.lightning_tiny ARGS`` in ``cwd``, the repository on its PYTHONPATH."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", lightning_tiny.__name__, *map(str, args)], cwd=cwd,
                          env={**os.environ, "PYTHONPATH": path}, capture_output=True, text=True, timeout=300)


def test_fit_builds_experiment_model_stage_tree(tmp_path):
    """Experiment info above a model recorder with the module's name, size and hparams, then one child per stage."""
    logger = RigorousLogger(tmp_path / "study", note="first")
    trainer(logger).fit(TinyModel(lr=0.05), loader(), loader(batches=2))
    experiment = logger.experiment.recorder
    assert dict(experiment.local_data) == {"note": "first"}
    (model,) = experiment.children
    assert dict(model.local_data) == {"model": "TinyModel", "parameters": 21, "version": logger.version, "lr": 0.05,
                                      "hidden": 4, "model_number": 1, "session": 1}
    assert sorted(child["stage"] for child in model.children) == ["train", "validate"]


def test_one_record_per_optimizer_step_with_metrics_and_added_values(tmp_path):
    """Each train step is one record: step, epoch, batch_idx, train_loss_step and the value added in training_step."""
    logger = RigorousLogger(tmp_path / "study")
    trainer(logger).fit(TinyModel(), loader(), loader(batches=2))
    steps = rows(logger, f"SELECT step, epoch, batch_idx, batch_size, train_loss_step IS NOT NULL FROM records "
                         f"WHERE {TRAIN_STEPS} ORDER BY step")
    assert steps == [(step, step // 4, step % 4, 4, True) for step in range(8)]
    epochs = rows(logger, "SELECT step, epoch, stage FROM records WHERE level = 'epoch' ORDER BY step, stage")
    assert epochs == [(3, 0, "train"), (3, 0, "validate"), (7, 1, "train"), (7, 1, "validate")]


def test_values_added_by_a_callback_at_batch_end_join_that_batch(tmp_path):
    """A user callback's add() in on_train_batch_end lands in the same record as train_loss_step."""

    class Adder(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            recorder_of(trainer).add(seen=batch_idx)

    logger = RigorousLogger(tmp_path / "study")
    trainer(logger, callbacks=[Adder()], limit_val_batches=0).fit(TinyModel(), loader())
    got = rows(logger, f"SELECT batch_idx, seen, train_loss_step IS NOT NULL FROM records WHERE {TRAIN_STEPS} ORDER BY step")
    assert got == [(i % 4, i % 4, True) for i in range(8)]


def test_one_record_per_step_whatever_log_every_n_steps(tmp_path):
    """With log_every_n_steps=3 every step still has its record; the logged ones carry the metric."""
    logger = RigorousLogger(tmp_path / "study")
    trainer(logger, log_every_n_steps=3, limit_val_batches=0).fit(TinyModel(), loader(batches=6))
    got = rows(logger, f"SELECT step, train_loss_step IS NOT NULL FROM records WHERE {TRAIN_STEPS} ORDER BY step")
    assert [step for step, _ in got] == list(range(12))
    assert [step for step, logged in got if logged] == [2, 5, 8, 11]


def test_learning_rate_monitor_values_land_in_their_steps_record(tmp_path):
    """LearningRateMonitor logs on its own; its value joins the step's record: no record holds it alone."""
    logger = RigorousLogger(tmp_path / "study")
    monitor = pl.callbacks.LearningRateMonitor(logging_interval="step")
    trainer(logger, callbacks=[monitor], limit_val_batches=0).fit(TinyModel(lr=0.05), loader())
    got = rows(logger, 'SELECT step, "lr-SGD", train_loss_step IS NOT NULL FROM records '
                       "WHERE \"lr-SGD\" IS NOT NULL ORDER BY step")
    assert got == [(step, 0.05, True) for step in range(8)]


def test_gradient_accumulation_makes_one_record_per_optimizer_step(tmp_path):
    """accumulate_grad_batches=2: two batches per step, one record per step, none without metrics."""
    logger = RigorousLogger(tmp_path / "study")
    trainer(logger, accumulate_grad_batches=2, limit_val_batches=0).fit(TinyModel(), loader())
    got = rows(logger, f"SELECT step, batch_idx, train_loss_step IS NOT NULL FROM records WHERE {TRAIN_STEPS} ORDER BY step")
    assert got == [(0, 1, True), (1, 3, True), (2, 1, True), (3, 3, True)]


def test_validation_records_and_sanity_check_kept_apart(tmp_path):
    """Sanity-check batches go to stage sanity_check; validate holds real batches and one epoch row each epoch."""
    logger = RigorousLogger(tmp_path / "study")
    trainer(logger, num_sanity_val_steps=2).fit(TinyModel(), loader(), loader(batches=2))
    counts = dict(rows(logger, "SELECT stage || '/' || level, count(*) FROM records GROUP BY ALL"))
    assert counts == {"sanity_check/batch": 2, "train/step": 8, "train/epoch": 2, "validate/batch": 4,
                      "validate/epoch": 2}
    assert rows(logger, "SELECT epoch, step FROM records WHERE stage = 'validate' AND level = 'epoch' ORDER BY step") \
        == [(0, 3), (1, 7)]


def test_every_record_has_its_wall_time(tmp_path):
    """Step, batch and epoch records of fit and test carry wall_time: seconds since the epoch, in step order."""
    logger = RigorousLogger(tmp_path / "study")
    model, fitter, before = TinyModel(), trainer(logger), time.time()
    fitter.fit(model, loader(), loader(batches=2))
    fitter.test(model, loader(batches=2))
    after = time.time()
    assert rows(logger, "SELECT level, count(*) FROM records WHERE wall_time IS NULL GROUP BY ALL") == []
    ((first, last),) = rows(logger, "SELECT min(wall_time), max(wall_time) FROM records")
    assert before <= first <= last <= after
    steps = [wall_time for (wall_time,) in rows(logger, f"SELECT wall_time FROM records WHERE {TRAIN_STEPS} ORDER BY step")]
    assert len(steps) == 8 and steps == sorted(steps)


def test_an_added_wall_time_is_kept_as_user_wall_time(tmp_path):
    """A value add()-ed as wall_time meets the adapter's key: both stay, the user's as user/wall_time."""

    class Timed(TinyModel):
        def training_step(self, batch, batch_idx):
            recorder_of(self.trainer).add(wall_time=-1.0)
            return super().training_step(batch, batch_idx)

    logger = RigorousLogger(tmp_path / "study")
    trainer(logger, limit_val_batches=0, max_epochs=1).fit(Timed(), loader())
    assert rows(logger, f'SELECT DISTINCT "user/wall_time", wall_time > 1e9 FROM records WHERE {TRAIN_STEPS}') == [
        (-1.0, True)]


def test_a_sweep_of_three_fits_on_one_logger_keeps_each_fits_hparams(tmp_path):
    """Three fits with different lr on one logger: one experiment, each record reads its own fit's lr."""
    logger = RigorousLogger(tmp_path / "study")
    for lr in (0.1, 0.01, 0.001):
        trainer(logger, limit_val_batches=0).fit(TinyModel(lr=lr), loader())
    assert len(logger.collection.runs) == 1
    got = rows(logger, "SELECT model_number, lr, count(*) FROM records GROUP BY ALL ORDER BY model_number")
    assert got == [(1, 0.1, 10), (2, 0.01, 10), (3, 0.001, 10)]


def test_a_failed_fit_stays_failed_and_the_next_fit_is_a_new_attempt(tmp_path):
    """A fit that raises ends its run as error with its data; the next fit is the same experiment number again.

    (It runs as error number 2, and ends with error_number 0 as every successful run.)
    """
    logger = RigorousLogger(tmp_path / "study")
    failing = TinyModel(lr=0.5)
    failing.fail_at_step = 2
    with pytest.raises(ValueError, match="boom"):
        trainer(logger, limit_val_batches=0).fit(failing, loader())
    trainer(logger, limit_val_batches=0).fit(TinyModel(lr=0.1), loader())
    logger.finish()
    runs = [(run["experiment_number"], run["error_number"], run["status"], run.get("error"))
            for run in logger.collection.runs]
    assert runs == [(1, 1, "error", "ValueError: boom"), (1, 0, "ok", None)]
    got = rows(logger, f"SELECT error_number, had_error, lr, count(*) FROM records WHERE {TRAIN_STEPS} "
                       "GROUP BY ALL ORDER BY 1")
    assert got == [(0, False, 0.1, 8), (1, True, 0.5, 3)]  # steps 0, 1 and the failing step 2


def test_keyboard_interrupt_marks_error(tmp_path):
    """A KeyboardInterrupt (Lightning turns it into SystemExit) leaves the run failed with its data."""

    class Interrupted(TinyModel):
        def training_step(self, batch, batch_idx):
            if self.global_step == 2:
                raise KeyboardInterrupt
            return super().training_step(batch, batch_idx)

    logger = RigorousLogger(tmp_path / "study")
    with pytest.raises((KeyboardInterrupt, SystemExit)):
        trainer(logger).fit(Interrupted(), loader())
    (run,) = logger.collection.runs
    assert (run["had_error"], run["error"]) == (True, "KeyboardInterrupt: interrupted (Ctrl-C, SIGINT)")
    assert rows(logger, f"SELECT count(*) FROM records WHERE {TRAIN_STEPS}") == [(3,)]


def test_user_keys_meeting_the_adapters_keys_keep_both_values(tmp_path):
    """Info lr and hparam lr, hparams model/stage, an added step: every value stays queryable under its documented name."""

    class Classifier(TinyModel):
        def __init__(self, lr, model, stage):
            super().__init__(lr=lr)
            self.save_hyperparameters()

        def training_step(self, batch, batch_idx):
            recorder_of(self.trainer).add(step=-1)
            return super().training_step(batch, batch_idx)

    with pytest.warns(UserWarning, match="'hparams/lr'"):
        logger = RigorousLogger(tmp_path / "study", lr=0.001)
        trainer(logger, limit_val_batches=0, max_epochs=1).fit(Classifier(0.05, "resnet18", "finetune"), loader())
    got = rows(logger, 'SELECT DISTINCT lr, "hparams/lr", model, "hparams/model", stage, "hparams/stage", "user/step" '
                       f"FROM records WHERE {TRAIN_STEPS}")
    assert got == [(0.001, 0.05, "Classifier", "resnet18", "train", "finetune", -1)]
    assert rows(logger, f"SELECT step FROM records WHERE {TRAIN_STEPS} ORDER BY step") == [(i,) for i in range(4)]


@pytest.mark.parametrize("configuration", ["fast_dev_run", "logger=False", "second logger"])
def test_recorder_of_works_in_every_trainer_configuration(tmp_path, configuration):
    """recorder_of(trainer).add() never fails; it records when a RigorousLogger records, else drops the values."""
    logger = RigorousLogger(tmp_path / "study")
    options = {"fast_dev_run": {"fast_dev_run": True},
               "logger=False": {"logger": False},
               "second logger": {"logger": [pl.loggers.CSVLogger(tmp_path), logger]}}[configuration]
    fitter = trainer(options.pop("logger", logger), limit_val_batches=0, default_root_dir=tmp_path, **options)
    fitter.fit(TinyModel(), loader())
    if configuration == "second logger":
        assert rows(logger, f"SELECT count(batch_size) FROM records WHERE {TRAIN_STEPS}") == [(8,)]
    else:
        assert isinstance(recorder_of(fitter), NullRecorder)
        assert logger.experiment is None


class PickleTheTrainer(pl.Callback):
    """Pickles the Trainer, its loggers and callbacks included, in the middle of every training batch."""

    def __init__(self) -> None:
        self.pickled = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        pickle.loads(pickle.dumps(trainer))
        self.pickled += 1


def test_logger_and_trainer_pickle_before_during_and_after_logging(tmp_path):
    """Pickling works at any time; a copy in the same process records into the same running experiment."""
    logger = RigorousLogger(tmp_path / "study", note="pickled")
    pickler = PickleTheTrainer()
    fitter = trainer(logger, limit_val_batches=0, callbacks=[pickler])
    pickle.loads(pickle.dumps(fitter))
    fitter.fit(TinyModel(), loader())
    assert pickler.pickled == 8
    copy = pickle.loads(pickle.dumps(logger))
    pickle.loads(pickle.dumps(fitter))
    assert (copy.version, copy.save_dir) == (logger.version, logger.save_dir)
    trainer(copy, limit_val_batches=0).fit(TinyModel(lr=0.2), loader())
    assert copy.experiment is logger.experiment
    assert rows(logger, "SELECT model_number, lr, count(*) FROM records GROUP BY ALL ORDER BY 1") == [
        (1, 0.1, 10), (2, 0.2, 10)]


def test_each_run_records_its_context_unless_switched_off(tmp_path):
    """Without user code, the run's context names torch's and Lightning's versions, the command and the host;
    a collection made with record_context=False records none."""
    import torch

    logger = RigorousLogger(tmp_path / "study")
    trainer(logger, limit_val_batches=0, max_epochs=1).fit(TinyModel(), loader())
    (run,) = logger.collection.runs
    context = run["context"]
    assert (context["torch_version"], context["pytorch_lightning_version"]) == (torch.__version__, pl.__version__)
    assert context["command"] and context["hostname"] and context["python_version"]
    bare = RigorousLogger(ExperimentCollection(tmp_path / "bare", quiet=True, record_context=False))
    trainer(bare, limit_val_batches=0, max_epochs=1).fit(TinyModel(), loader())
    assert bare.collection.runs[0]["context"] == {}



@pytest.mark.parametrize("quiet", [True, False])
def test_the_logger_prints_nothing_unless_asked(tmp_path, capfd, quiet):
    """Like Lightning's CSVLogger the logger prints nothing by default; ``quiet=False`` prints where the run
    starts and where it was saved, as the collection's own lines on stderr (the Keras callback does the same)."""
    logger = RigorousLogger(tmp_path / "study", quiet=quiet)
    trainer(logger, max_epochs=1).fit(TinyModel(), loader(batches=2), loader(batches=1))
    logger.finish()
    ours = [line for line in capfd.readouterr().err.splitlines() if "rigorous_recorder" in line]
    expected = [f"rigorous_recorder: new collection {tmp_path / 'study.collection'}",
                f"rigorous_recorder: experiment 1 started ({logger.experiment.id})",
                f"rigorous_recorder: experiment 1 saved: 5 records in {logger.experiment.folder.path}"]
    assert ours == ([] if quiet else expected)


def test_version_and_log_dir_are_known_without_a_run(tmp_path):
    """version, log_dir and save_dir start no run; checkpoints go to <save_dir>/<name>/<version>/checkpoints."""
    logger = RigorousLogger(tmp_path / "study", version="v7")
    assert (logger.version, logger.log_dir) == ("v7", str(tmp_path / "study" / "v7"))
    assert not (tmp_path / "study.collection").exists()
    fitter = trainer(logger, max_epochs=1, limit_val_batches=0)
    fitter.fit(TinyModel(), loader())
    (checkpoint,) = (tmp_path / "study" / "v7" / "checkpoints").glob("*.ckpt")
    assert fitter.checkpoint_callback.best_model_path == str(checkpoint)


def test_fit_then_test_on_one_trainer_share_the_model_recorder_and_step_axis(tmp_path):
    """test() after fit() of the same module records beside the fit, at the step the fit reached."""
    logger = RigorousLogger(tmp_path / "study")
    model = TinyModel()
    fitter = trainer(logger)
    fitter.fit(model, loader(), loader(batches=2))
    fitter.test(model, loader(batches=2))
    assert rows(logger, "SELECT DISTINCT model_number, step FROM records WHERE stage = 'test'") == [(1, 8)]
    assert rows(logger, "SELECT count(*) FROM records WHERE stage = 'test' AND level = 'epoch' "
                        "AND test_loss IS NOT NULL") == [(1,)]


def test_several_validation_dataloaders_get_dataloader_idx(tmp_path):
    """Each validation batch record names its dataloader; metrics keep Lightning's suffixed names."""
    logger = RigorousLogger(tmp_path / "study")
    trainer(logger, max_epochs=1).fit(TinyModel(), loader(), [loader(batches=2), loader(batches=3, seed=1)])
    got = rows(logger, "SELECT dataloader_idx, count(*) FROM records WHERE stage = 'validate' AND level = 'batch' "
                       "GROUP BY ALL ORDER BY 1")
    assert got == [(0, 2), (1, 3)]
    columns = logger.collection.sql("SELECT * FROM records").columns
    assert {"val_loss/dataloader_idx_0", "val_loss/dataloader_idx_1"} <= set(columns)


def test_predict_records_each_batch(tmp_path):
    """predict() logs nothing in Lightning, but each batch has a record with the values added."""
    logger = RigorousLogger(tmp_path / "study")
    trainer(logger).predict(TinyModel(), loader(batches=3))
    assert rows(logger, "SELECT batch_idx, predicted FROM records WHERE stage = 'predict' ORDER BY 1") == [
        (0, 4), (1, 4), (2, 4)]


def test_success_flushes_and_finish_compacts(tmp_path):
    """After fit the run is still open (flushed); finish() marks it ok."""
    logger = RigorousLogger(ExperimentCollection(tmp_path / "study", quiet=True))
    trainer(logger, limit_val_batches=0).fit(TinyModel(), loader())
    assert logger.collection.runs[0]["status"] == "running"
    logger.finish()
    assert logger.collection.runs[0]["status"] == "ok"
    assert ExperimentCollection(tmp_path / "study").sql("SELECT count(*) FROM records").fetchall() == [(10,)]


def test_companion_callback_is_added_once_and_logger_is_not_iterable(tmp_path):
    """Three runs on one Trainer add one callback; Lightning takes the logger as one logger, not a list."""
    logger = RigorousLogger(tmp_path / "study")
    fitter = trainer(logger, max_epochs=1)
    model = TinyModel()
    fitter.fit(model, loader())
    fitter.validate(model, loader(batches=2))
    fitter.test(model, loader(batches=2))
    assert fitter.callbacks.count(logger.callback) == 1
    assert fitter.loggers == [logger]


def test_without_autolog_hparams_the_callback_can_be_passed(tmp_path):
    """With enable_autolog_hparams=False, passing logger.callback gives the same records."""
    logger = RigorousLogger(tmp_path / "study")
    trainer(logger, callbacks=[logger.callback], enable_autolog_hparams=False).fit(TinyModel(), loader())
    assert rows(logger, f"SELECT count(*) FROM records WHERE {TRAIN_STEPS}") == [(8,)]


def test_lightning_pytorch_trainer_accepts_the_logger(tmp_path):
    """The unified package's Trainer records through the same logger."""
    import lightning.pytorch as lightning  # in the dev extra, beside pytorch_lightning
    import torch

    class Model(lightning.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Linear(3, 1)

        def training_step(self, batch, batch_idx):
            loss = torch.nn.functional.mse_loss(self.net(batch[0]), batch[1])
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    logger = RigorousLogger(tmp_path / "study")
    lightning.Trainer(logger=logger, max_epochs=1, accelerator="cpu", log_every_n_steps=1, enable_progress_bar=False,
                      enable_model_summary=False).fit(Model(), loader())
    assert rows(logger, "SELECT count(train_loss) FROM records WHERE stage = 'train'") == [(4,)]


def test_fabric_log_dict_records_one_row_per_call(tmp_path):
    """Under Lightning Fabric (no Trainer), each fabric.log_dict() is one record with its step."""
    from lightning.fabric import Fabric

    logger = RigorousLogger(tmp_path / "study", run="fabric")
    fabric = Fabric(accelerator="cpu", devices=1, loggers=[logger])
    for step in range(3):
        fabric.log_dict({"loss": 1.0 / (step + 1)}, step=step)
    logger.finish()
    assert rows(logger, "SELECT run, step, loss FROM records ORDER BY step") == [
        ("fabric", 0, 1.0), ("fabric", 1, 0.5), ("fabric", 2, 1 / 3)]


def test_recorder_of_a_fabric_adds_to_its_next_log_dict_record(tmp_path):
    """recorder_of(fabric).add() values join the next fabric.log_dict() record; a Fabric without our logger drops them."""
    from lightning.fabric import Fabric

    logger = RigorousLogger(tmp_path / "study")
    fabric = Fabric(accelerator="cpu", devices=1, loggers=[logger])
    for step in range(2):
        recorder_of(fabric).add(note=f"step {step}")
        fabric.log_dict({"loss": 1.0 / (step + 1)}, step=step)
    logger.finish()
    assert rows(logger, "SELECT step, note, loss FROM records ORDER BY step") == [(0, "step 0", 1.0), (1, "step 1", 0.5)]
    assert isinstance(recorder_of(Fabric(accelerator="cpu", devices=1)), NullRecorder)



class ComplexMetric(TinyModel):
    """Logs a complex metric by hand at two steps of the first epoch (``self.log`` itself casts a complex value to
    float with a warning); ``self.log`` of one reaches the logger as that float."""

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        if self.current_epoch == 0 and batch_idx in (1, 2):
            self.logger.log_metrics({"z": torch.tensor(1 + 2j) * batch_idx, "ok": 1.0}, step=self.global_step)
        return loss


def test_a_complex_metric_is_kept_as_its_text_with_one_warning(tmp_path, recwarn):
    """A complex value logged by hand, which a record cannot store, neither stops the fit nor loses a value: it is
    stored as its text (what Lightning's CSVLogger writes), with one warning naming the key; so under Fabric."""
    logger = RigorousLogger(tmp_path / "study")
    trainer(logger).fit(ComplexMetric(), loader(), loader(batches=2))
    logger.finish()
    assert ExperimentCollection(tmp_path / "study", quiet=True).runs[0]["status"] == "ok"
    steps = rows(logger, f"SELECT step, z, ok, train_loss_step IS NOT NULL FROM records WHERE {TRAIN_STEPS} ORDER BY step")
    assert steps == [(0, None, None, True), (1, "(1+2j)", 1.0, True), (2, "(2+4j)", 1.0, True),
                     *[(step, None, None, True) for step in range(3, 8)]]
    ours = [str(warning.message) for warning in recwarn if "rigorous_recorder" in str(warning.message)]
    assert ours == ["rigorous_recorder: metric 'z' holds a complex, which a record cannot store: kept as its text "
                    "('(1+2j)'), as Lightning's CSVLogger writes it"]

    from lightning.fabric import Fabric

    fabric_logger = RigorousLogger(tmp_path / "fabric")
    fabric = Fabric(accelerator="cpu", devices=1, loggers=[fabric_logger])
    with pytest.warns(UserWarning, match="metric 'z' holds a complex") as warned:
        fabric.log_dict({"z": 3j, "loss": 0.5}, step=0)
        fabric.log_dict({"z": 1 - 1j, "loss": 0.25}, step=1)
    fabric_logger.finish()
    assert len([warning for warning in warned if "rigorous_recorder" in str(warning.message)]) == 1
    assert rows(fabric_logger, "SELECT step, z, loss FROM records ORDER BY step") == [
        (0, "3j", 0.5), (1, "(1-1j)", 0.25)]


@pytest.mark.slow
def test_the_logger_builds_on_the_lightning_package_the_program_imported():
    """After ``import pytorch_lightning``, importing the logger leaves the unified package unimported."""
    code = ("import sys, pytorch_lightning, rigorous_recorder.integrations.lightning as adapter; "
            "print(adapter.Logger.__module__, 'lightning.pytorch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.stdout.split() == ["pytorch_lightning.loggers.logger", "False"], done.stderr[-3000:]


@pytest.mark.slow
def test_ddp_records_each_row_once(tmp_path):
    """strategy='ddp' on two CPU processes: rank zero alone records, one copy per record."""
    done = run_script("ddp", tmp_path / "study", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    collection = ExperimentCollection(tmp_path / "study")
    assert [run["status"] for run in collection.runs] == ["ok"]
    # 4 batches of 4 split over 2 ranks: 2 batches per epoch, 2 epochs
    got = collection.sql(f"SELECT step, count(*) FROM records WHERE {TRAIN_STEPS} GROUP BY step ORDER BY step")
    assert got.fetchall() == [(0, 1), (1, 1), (2, 1), (3, 1)]
    # Lightning's rank-zero conventions: other ranks see a dummy experiment and a recorder that drops values
    ranks = sorted(line.split()[1:] for line in done.stdout.splitlines() if line.startswith("RANK "))
    assert ranks == [["0", "Experiment", "Recorder"], ["1", "_DummyExperiment", "NullRecorder"]], done.stdout


@pytest.mark.slow
def test_ddp_spawn_and_fork_workers_record_each_row_once(tmp_path):
    """ddp_spawn (the Trainer pickled to 2 workers) and ddp_notebook (fork): one finished run each, rows once."""
    done = run_script("spawn", tmp_path / "study", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    collection = ExperimentCollection(tmp_path / "study")
    assert [(run["status"], run["had_error"]) for run in collection.runs] == [("ok", False), ("ok", False)]
    got = collection.sql(f"SELECT run, step, count(*) FROM records WHERE {TRAIN_STEPS} GROUP BY ALL ORDER BY ALL")
    assert got.fetchall() == [(run, step, 1) for run in ("ddp_notebook", "ddp_spawn") for step in range(4)]


@pytest.mark.slow
def test_resume_with_ckpt_path_keeps_checkpoint_state_and_the_run(tmp_path):
    """A fit crashes in epoch 2; fit(ckpt_path="last") in a new process with the same version continues the run.

    ModelCheckpoint keeps best_model_score, best_k_models and last_model_path; no other version folder
    appears; the re-run steps are told apart by session.
    """
    first = run_script("fit", tmp_path / "study", "v1", 3, "--crash", cwd=tmp_path)
    assert first.returncode != 0 and "boom" in first.stderr, first.stderr[-3000:]
    best = first.stdout.split("BEST ")[1].split()[0]
    second = run_script("fit", tmp_path / "study", "v1", 3, "last", cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    restored = second.stdout.split("RESTORED ")[1].splitlines()[0]
    folder = tmp_path / "study" / "v1" / "checkpoints"
    assert restored == f"{best} {[str(folder / 'epoch=0-step=4.ckpt')]} {folder / 'last.ckpt'}"
    assert [path.name for path in (tmp_path / "study").iterdir()] == ["v1"]
    kept = sorted(path.name for path in folder.iterdir())  # the 2 best of 3 epochs, and last: none written twice
    assert len(kept) == 3 and "last.ckpt" in kept and all("-v" not in name for name in kept), kept
    collection = ExperimentCollection(tmp_path / "study")
    (run,) = collection.runs
    assert (run["status"], run["had_error"]) == ("ok", False)
    got = collection.sql(f"SELECT session, min(step), max(step), count(*) FROM records WHERE {TRAIN_STEPS} "
                         "GROUP BY session ORDER BY session").fetchall()
    assert got == [(1, 0, 6, 7), (2, 4, 11, 8)]
    latest = collection.sql(f"SELECT step, session FROM records WHERE {TRAIN_STEPS} QUALIFY row_number() "
                            "OVER (PARTITION BY run_id, step ORDER BY session DESC) = 1 ORDER BY step").fetchall()
    assert latest == [(step, 1 if step < 4 else 2) for step in range(12)]  # README's query: the latest of each step


@pytest.mark.slow
def test_example_runs_and_prints_its_query(tmp_path):
    """examples/lightning_example.py trains, tests and prints a query of its results.

    It runs as README's main example installs it, the ``lightning`` extra only: pandas and the
    unified ``lightning`` package are made unimportable, so the logger builds on pytorch_lightning.
    """
    without = Path(__file__).parent / "scripts" / "without_modules.py"
    done = subprocess.run([sys.executable, str(without), "pandas,lightning", str(ROOT / "examples" / "lightning_example.py")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    recorded = ExperimentCollection(tmp_path / "data" / "lightning_example", create=False, quiet=True)
    (epochs, losses), = recorded.sql("SELECT count(DISTINCT epoch), count(val_loss) FROM records "
                                     "WHERE level = 'epoch'").fetchall()
    assert epochs > 0 and losses > 0, done.stdout
