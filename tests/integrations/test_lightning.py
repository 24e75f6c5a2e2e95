"""RigorousLogger with a real Trainer and a real tiny model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pl = pytest.importorskip("pytorch_lightning")

sys.path.insert(0, str(Path(__file__).parent / "scripts"))
from lightning_tiny import TinyModel, loader, trainer  # noqa: E402

from rigorous_recorder import ExperimentCollection  # noqa: E402
from rigorous_recorder.integrations.lightning import RigorousLogger  # noqa: E402

SCRIPT = Path(__file__).parent / "scripts" / "lightning_tiny.py"
ROOT = Path(__file__).parents[2]


def rows(logger, query):
    return logger.collection.sql(query).fetchall()


def test_fit_builds_experiment_model_stage_tree(tmp_path):
    """Experiment info and hyperparameters, then model name and size, then one child per stage."""
    logger = RigorousLogger(tmp_path / "study", note="first")
    trainer(logger).fit(TinyModel(lr=0.05), loader(), loader(batches=2))
    experiment = logger.experiment.recorder
    assert (experiment["note"], experiment["lr"], experiment["hidden"]) == ("first", 0.05, 4)
    (model,) = experiment.children
    assert dict(model.local_data) == {"model": "TinyModel", "parameters": 21}
    assert sorted(child["stage"] for child in model.children) == ["train", "validate"]


def test_one_record_per_train_batch_with_lightning_metrics_and_added_values(tmp_path):
    """Each train batch is one record: step, epoch, train_loss_step and the value added in training_step."""
    logger = RigorousLogger(tmp_path / "study")
    trainer(logger).fit(TinyModel(), loader(), loader(batches=2))
    batches = rows(logger, "SELECT step, epoch, batch_idx, batch_size, train_loss_step IS NOT NULL FROM records "
                           "WHERE stage = 'train' AND batch_idx IS NOT NULL ORDER BY step")
    assert batches == [(step, step // 4, step % 4, 4, True) for step in range(8)]
    epochs = rows(logger, "SELECT step, epoch FROM records WHERE train_loss_epoch IS NOT NULL ORDER BY step")
    assert epochs == [(3, 0), (7, 1)]


def test_values_added_by_a_callback_at_batch_end_join_that_batch(tmp_path):
    """A user callback's add() in on_train_batch_end lands in the same record as train_loss_step."""

    class Adder(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            trainer.logger.recorder.add(seen=batch_idx)

    logger = RigorousLogger(tmp_path / "study")
    trainer(logger, callbacks=[Adder()], limit_val_batches=0).fit(TinyModel(), loader())
    got = rows(logger, "SELECT batch_idx, seen, train_loss_step IS NOT NULL FROM records "
                       "WHERE stage = 'train' AND batch_idx IS NOT NULL ORDER BY step")
    assert got == [(i % 4, i % 4, True) for i in range(8)]


def test_one_record_per_step_whatever_log_every_n_steps(tmp_path):
    """With log_every_n_steps=3 every batch still has its record; the logged ones carry the metric."""
    logger = RigorousLogger(tmp_path / "study")
    trainer(logger, log_every_n_steps=3, limit_val_batches=0).fit(TinyModel(), loader(batches=6))
    got = rows(logger, "SELECT step, train_loss_step IS NOT NULL FROM records "
                       "WHERE stage = 'train' AND batch_idx IS NOT NULL ORDER BY step")
    assert [step for step, _ in got] == list(range(12))
    assert [step for step, logged in got if logged] == [2, 5, 8, 11]


def test_validation_records_carry_val_loss_and_sanity_check_is_kept_apart(tmp_path):
    """Sanity-check batches go to stage sanity_check; validate holds only real validation."""
    logger = RigorousLogger(tmp_path / "study")
    trainer(logger, num_sanity_val_steps=2).fit(TinyModel(), loader(), loader(batches=2))
    counts = dict(rows(logger, "SELECT stage, count(*) FROM records GROUP BY stage"))
    assert counts == {"sanity_check": 2, "train": 10, "validate": 6}
    assert rows(logger, "SELECT epoch, step FROM records WHERE val_loss IS NOT NULL ORDER BY step") == [(0, 3), (1, 7)]


def test_fit_test_fit_is_one_experiment_with_monotonic_steps(tmp_path):
    """fit, test, then fit again with new Trainers: one experiment, stages apart, steps increasing."""
    logger = RigorousLogger(tmp_path / "study")
    model = TinyModel()
    trainer(logger).fit(model, loader(), loader(batches=2))
    trainer(logger).test(model, loader(batches=2))
    trainer(logger).fit(model, loader(), loader(batches=2))
    assert len(logger.collection.runs) == 1
    records = logger.collection.records  # in commit order, unlike an SQL result without ORDER BY
    for stage in ("train", "validate", "test"):
        steps = [record["step"] for record in records if record["stage"] == stage]
        assert steps and steps == sorted(steps), stage
    train = [record["step"] for record in records if record["stage"] == "train" and record["batch_idx"] is not None]
    assert train == list(range(8)) + list(range(9, 17))
    assert rows(logger, "SELECT count(*) FROM records WHERE test_loss IS NOT NULL") == [(1,)]


def test_same_trainer_fit_then_test_shares_the_step_axis(tmp_path):
    """On one Trainer, test continues from the fit's last step."""
    logger = RigorousLogger(tmp_path / "study")
    model = TinyModel()
    fitter = trainer(logger)
    fitter.fit(model, loader(), loader(batches=2))
    fitter.test(model, loader(batches=2))
    assert rows(logger, "SELECT DISTINCT step FROM records WHERE stage = 'test'") == [(8,)]


def test_exception_in_fit_keeps_data_marks_error_and_propagates(tmp_path):
    """A ValueError in training_step escapes unchanged; the records so far stay; had_error is set."""
    logger = RigorousLogger(tmp_path / "study")
    model = TinyModel()
    model.fail_at_step = 5
    with pytest.raises(ValueError, match="boom"):
        trainer(logger).fit(model, loader(), loader(batches=2))
    (run,) = logger.collection.runs
    assert (run["status"], run["had_error"], run["error"]) == ("error", True, "ValueError: boom")
    assert rows(logger, "SELECT count(*), bool_and(had_error) FROM records WHERE stage = 'train'") == [(6, True)]


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
    assert rows(logger, "SELECT count(*) FROM records WHERE stage = 'train'") == [(2,)]


def test_fit_after_a_failure_resumes_the_same_experiment(tmp_path):
    """A failed fit finishes the run; the next fit on that logger reopens it."""
    logger = RigorousLogger(tmp_path / "study")
    model = TinyModel()
    model.fail_at_step = 2
    with pytest.raises(ValueError):
        trainer(logger).fit(model, loader())
    model.fail_at_step = None
    trainer(logger).fit(model, loader())
    logger.finish()
    (run,) = logger.collection.runs
    assert (run["status"], run["had_error"]) == ("ok", False)
    assert rows(logger, "SELECT count(*) FROM records WHERE stage = 'train' AND batch_idx IS NOT NULL") == [(10,)]


def test_success_flushes_and_finish_compacts(tmp_path):
    """After fit the run is still open (flushed); finish() marks it ok."""
    logger = RigorousLogger(tmp_path / "study")
    trainer(logger).fit(TinyModel(), loader())
    assert logger.collection.runs[0]["status"] == "running"
    logger.finish()
    assert logger.collection.runs[0]["status"] == "ok"
    assert ExperimentCollection(tmp_path / "study").sql("SELECT count(*) FROM records").fetchall() == [(10,)]


def test_several_validation_dataloaders_get_dataloader_idx(tmp_path):
    """Each validation batch record names its dataloader; metrics keep Lightning's suffixed names."""
    logger = RigorousLogger(tmp_path / "study")
    trainer(logger, max_epochs=1).fit(TinyModel(), loader(), [loader(batches=2), loader(batches=3, seed=1)])
    got = rows(logger, "SELECT dataloader_idx, count(*) FROM records WHERE stage = 'validate' "
                       "AND batch_idx IS NOT NULL GROUP BY ALL ORDER BY 1")
    assert got == [(0, 2), (1, 3)]
    columns = logger.collection.sql("SELECT * FROM records").columns
    assert {"val_loss/dataloader_idx_0", "val_loss/dataloader_idx_1"} <= set(columns)


def test_predict_records_each_batch(tmp_path):
    """predict() logs nothing in Lightning, but each batch has a record with the values added."""
    logger = RigorousLogger(tmp_path / "study")
    trainer(logger).predict(TinyModel(), loader(batches=3))
    assert rows(logger, "SELECT batch_idx, predicted FROM records WHERE stage = 'predict' ORDER BY 1") == [
        (0, 4), (1, 4), (2, 4)]


def test_checkpoints_land_beside_the_collection(tmp_path):
    """ModelCheckpoint writes to <save_dir>/<name>/<run id>/checkpoints next to study.collection."""
    logger = RigorousLogger(tmp_path / "study")
    fitter = trainer(logger, max_epochs=1)
    fitter.fit(TinyModel(), loader())
    (checkpoint,) = (tmp_path / "study" / logger.experiment.id / "checkpoints").glob("*.ckpt")
    assert fitter.checkpoint_callback.best_model_path == str(checkpoint)
    assert (logger.save_dir, logger.name) == (str(tmp_path), "study")


def test_existing_collection_is_accepted(tmp_path):
    """An ExperimentCollection passed in is used as is."""
    collection = ExperimentCollection(tmp_path / "study", quiet=True)
    logger = RigorousLogger(collection)
    trainer(logger, max_epochs=1).fit(TinyModel(), loader())
    assert logger.collection is collection and len(collection.runs) == 1


def test_companion_callback_is_appended_once_and_logger_is_not_iterable(tmp_path):
    """Three runs on one Trainer add one callback; the logger defines no __iter__."""
    logger = RigorousLogger(tmp_path / "study")
    fitter = trainer(logger, max_epochs=1)
    model = TinyModel()
    fitter.fit(model, loader())
    fitter.validate(model, loader(batches=2))
    fitter.test(model, loader(batches=2))
    assert fitter.callbacks.count(logger.callback) == 1
    assert not hasattr(RigorousLogger, "__iter__")


def test_without_autolog_hparams_the_callback_can_be_passed(tmp_path):
    """With enable_autolog_hparams=False, passing logger.callback gives the same records."""
    logger = RigorousLogger(tmp_path / "study")
    trainer(logger, callbacks=[logger.callback], enable_autolog_hparams=False).fit(TinyModel(), loader())
    assert rows(logger, "SELECT count(*) FROM records WHERE stage = 'train' AND batch_idx IS NOT NULL") == [(8,)]


def test_ddp_records_each_row_once(tmp_path):
    """strategy='ddp' on two CPU processes: rank zero alone records, one copy per record."""
    done = subprocess.run([sys.executable, str(SCRIPT), "ddp", str(tmp_path / "study")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    collection = ExperimentCollection(tmp_path / "study")
    assert len(collection.runs) == 1
    # 4 batches of 4 split over 2 ranks: 2 batches per epoch, 2 epochs
    got = collection.sql("SELECT step, count(*) FROM records WHERE stage='train' AND batch_idx IS NOT NULL "
                         "GROUP BY step ORDER BY step").fetchall()
    assert got == [(0, 1), (1, 1), (2, 1), (3, 1)]


def test_resume_from_checkpoint_in_a_new_process_continues_the_experiment(tmp_path):
    """A crashed fit, then fit(ckpt_path=last.ckpt) in a new process: one experiment, steps continue."""
    study, ckpts = str(tmp_path / "study"), str(tmp_path / "ckpts")
    first = subprocess.run([sys.executable, str(SCRIPT), "fit", study, ckpts, "3", "--crash"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=120)
    assert first.returncode != 0 and "boom" in first.stderr
    second = subprocess.run([sys.executable, str(SCRIPT), "fit", study, ckpts, "3", str(tmp_path / "ckpts" / "last.ckpt")],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr[-3000:]
    collection = ExperimentCollection(study)
    (run,) = collection.runs
    assert (run["status"], run["had_error"]) == ("ok", False)
    steps = [step for (step,) in collection.sql("SELECT step FROM records WHERE stage = 'train' "
                                                 "AND batch_idx IS NOT NULL").fetchall()]
    assert steps == list(range(12))


def test_resumed_run_keeps_its_checkpoint_folder(tmp_path):
    """With Lightning's default ModelCheckpoint, a resumed fit writes into the run's own folder."""
    study = str(tmp_path / "study")
    first = subprocess.run([sys.executable, str(SCRIPT), "fit", study, "-", "1"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr[-3000:]
    run_id = first.stdout.split("RUN_ID ")[1].split()[0]
    (checkpoint,) = (tmp_path / "study" / run_id / "checkpoints").glob("*.ckpt")
    second = subprocess.run([sys.executable, str(SCRIPT), "fit", study, "-", "2", str(checkpoint)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"RUN_ID {run_id}" in second.stdout
    assert sorted(path.name for path in (tmp_path / "study").iterdir()) == [run_id]
    assert len(list((tmp_path / "study" / run_id / "checkpoints").glob("*.ckpt"))) == 2


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


def test_example_runs_and_prints_its_query(tmp_path):
    """examples/lightning_example.py trains, tests and prints a query of its results.

    It runs as README's main example installs it, the ``lightning`` extra only: pandas and the
    unified ``lightning`` package are made unimportable, so the logger builds on pytorch_lightning.
    """
    without = Path(__file__).parent / "scripts" / "without_modules.py"
    done = subprocess.run([sys.executable, str(without), "pandas,lightning", str(ROOT / "examples" / "lightning_example.py")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "train_loss" in done.stdout
    assert (tmp_path / "data").is_dir()
