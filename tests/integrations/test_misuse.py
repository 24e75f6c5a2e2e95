"""The adapters as users misuse them: loggers and callbacks reused, runs without a fit, fits that fail,
hyperparameters and metrics of odd types, Keras's fit options. Real Trainers and real Keras fits of
tiny models (torch backend); what each stores is compared with what Lightning's CSVLogger and
TensorBoardLogger keep where they differ.
"""

from __future__ import annotations

import argparse
import datetime
import enum
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

pl = pytest.importorskip("pytorch_lightning")
torch = pytest.importorskip("torch")
keras = pytest.importorskip("keras")
np = pytest.importorskip("numpy")

from rigorous_recorder import ExperimentCollection  # noqa: E402
from rigorous_recorder.integrations.keras import RigorousCallback  # noqa: E402
from rigorous_recorder.integrations.lightning import RigorousLogger  # noqa: E402

from .lightning_tiny import TinyModel, loader, trainer  # noqa: E402

ENV = {**os.environ, "KERAS_BACKEND": "torch"}


def rows(collection, query):
    return collection.sql(query).fetchall()


# -- Lightning -------------------------------------------------------------------------------------


def test_one_logger_for_two_trainers_keeps_each_fit_in_its_model_recorder(tmp_path):
    """Two Trainers, two modules, one logger: one experiment, model_number 1 and 2, each from step 0."""
    logger = RigorousLogger(tmp_path / "study")
    for _ in range(2):
        trainer(logger, max_epochs=1).fit(TinyModel(), loader(), loader(batches=2))
    logger.finish()
    assert rows(logger.collection, "SELECT experiment_number, model_number, min(step), max(step), count(*) "
                                   "FROM records WHERE level = 'step' GROUP BY ALL ORDER BY ALL") == [
        (1, 1, 0, 3, 4), (1, 2, 0, 3, 4)]


def test_fit_test_predict_then_validate_only_and_test_only(tmp_path):
    """fit, test and predict of one module share its model recorder; a validate() or test() alone records
    its batches and its epoch row in a model recorder of its own call, at step 0."""
    logger = RigorousLogger(tmp_path / "study")
    model = TinyModel()
    fitter = trainer(logger, max_epochs=1)
    fitter.fit(model, loader(), loader(batches=2))
    fitter.test(model, loader(batches=2), verbose=False)
    fitter.predict(model, loader(batches=2))
    other = RigorousLogger(tmp_path / "alone")
    trainer(other).validate(TinyModel(), loader(batches=2), verbose=False)
    trainer(other).test(TinyModel(), loader(batches=2), verbose=False)
    for each in (logger, other):
        each.finish()
    assert rows(logger.collection, "SELECT model_number, stage, level, count(*), min(step) FROM records "
                                   "GROUP BY ALL ORDER BY ALL") == [
        (1, "predict", "batch", 2, 4), (1, "test", "batch", 2, 4), (1, "test", "epoch", 1, 4),
        (1, "train", "epoch", 1, 3), (1, "train", "step", 4, 0),
        (1, "validate", "batch", 2, 3), (1, "validate", "epoch", 1, 3)]
    assert rows(other.collection, "SELECT model_number, stage, level, count(*), min(step), "
                                  "count(val_loss), count(test_loss) FROM records GROUP BY ALL ORDER BY ALL") == [
        (1, "validate", "batch", 2, 0, 0, 0), (1, "validate", "epoch", 1, 0, 1, 0),
        (2, "test", "batch", 2, 0, 0, 0), (2, "test", "epoch", 1, 0, 0, 1)]


def test_an_exception_in_training_step_keeps_the_steps_before_and_names_the_error(tmp_path):
    """The failing step's row is kept (no loss: it never logged), every earlier one with its loss, the run is
    ``error`` with the exception's text."""
    logger = RigorousLogger(tmp_path / "study")
    model = TinyModel()
    model.fail_at_step = 3
    with pytest.raises(ValueError, match="boom"):
        trainer(logger).fit(model, loader(), loader(batches=2))
    assert rows(logger.collection, "SELECT step, train_loss_step IS NOT NULL FROM records WHERE level = 'step' "
                                   "ORDER BY step") == [(0, True), (1, True), (2, True), (3, False)]
    assert rows(logger.collection, "SELECT status, error FROM experiments") == [("error", "ValueError: boom")]


class Color(enum.Enum):
    RED = 1


class OddHyperparameters(TinyModel):
    """save_hyperparameters() of what people pass: namespaces, nested dicts, tensors, None, paths, enums."""

    def __init__(self, options=argparse.Namespace(depth=2, inner=argparse.Namespace(width=8)),
                 schedule={"warmup": {"steps": 10}, "empty": {}}, scale=torch.tensor(0.5),
                 weights=torch.tensor([1.0, 2.0]), resume=None, data_dir=pathlib.Path("/data/set"),
                 color=Color.RED, activation=torch.nn.ReLU, started=datetime.date(2020, 1, 2)):
        super().__init__()
        self.save_hyperparameters()


def test_hyperparameters_of_odd_types_are_stored_as_lightning_loggers_show_them(tmp_path):
    """Nested namespaces and dicts flatten to ``a/b`` keys, tensors become numbers and lists, None stays None,
    dates stay dates; a path, an enum or a class is stored as ``str()`` of it, as CSVLogger and
    TensorBoardLogger write it (``/data/set``, not ``PosixPath('/data/set')``)."""
    logger = RigorousLogger(tmp_path / "study")
    trainer(logger, max_epochs=1).fit(OddHyperparameters(), loader(batches=1))
    logger.finish()
    assert rows(logger.collection, """SELECT "options/depth", "options/inner/width", "schedule/warmup/steps",
        "schedule/empty", scale, weights, resume, data_dir, color, activation, started FROM records LIMIT 1""") == [
        (2, 8, 10, "{}", 0.5, [1.0, 2.0], None, "/data/set", "Color.RED", str(torch.nn.ReLU),
         datetime.date(2020, 1, 2))]


def test_hyperparameters_logged_under_fabric_are_stored(tmp_path):
    """``fabric.logger.log_hyperparams(...)`` with no Trainer: every record sees them (CSVLogger writes them
    to hparams.yaml); a hyperparameter named like experiment info of another value is kept apart."""
    from lightning.fabric import Fabric

    logger = RigorousLogger(tmp_path / "study", run="fabric")
    fabric = Fabric(accelerator="cpu", devices=1, loggers=[logger])
    fabric.logger.log_hyperparams({"lr": 0.1, "optimizer": {"name": "sgd"}, "run": "other", "step": 9})
    with pytest.warns(UserWarning) as warned:
        fabric.log_dict({"loss": 1.0}, step=0)
    assert [str(warning.message) for warning in warned] == [
        "rigorous_recorder: hyperparameter 'step' is also the adapter's: kept as 'hparams/step'",
        "rigorous_recorder: hyperparameter 'run' is also experiment info of another value: kept as 'hparams/run'"]
    for step in range(1, 2):
        fabric.log_dict({"loss": 1.0 / (step + 1)}, step=step)
    logger.finish()
    assert rows(logger.collection, 'SELECT step, loss, lr, "optimizer/name", run, "hparams/run", "hparams/step" '
                                   "FROM records ORDER BY step") == [(0, 1.0, 0.1, "sgd", "fabric", "other", 9),
                                                                     (1, 0.5, 0.1, "sgd", "fabric", "other", 9)]


def test_hyperparameters_logged_by_hand_then_finished_are_stored(tmp_path):
    """log_hyperparams with no Trainer call after it is not lost: finish() stores it with the experiment."""
    logger = RigorousLogger(tmp_path / "study")
    logger.log_hyperparams(argparse.Namespace(lr=0.1, layers=3))
    logger.finish()
    assert rows(logger.collection, "SELECT lr, layers FROM experiments") == [(0.1, 3)]


def test_log_metrics_of_every_scalar_dtype_keeps_its_kind(tmp_path):
    """0-d tensors of any dtype, Python ints and bools, numpy scalars: floats as DOUBLE, ints as BIGINT,
    bools as BOOLEAN, a 1-d tensor as a list; one record per call."""
    logger = RigorousLogger(tmp_path / "study")
    metrics = {"f16": torch.tensor(1.5, dtype=torch.float16), "bf16": torch.tensor(1.25, dtype=torch.bfloat16),
               "f64": torch.tensor(0.1, dtype=torch.float64), "i8": torch.tensor(-3, dtype=torch.int8),
               "u8": torch.tensor(200, dtype=torch.uint8), "i64": torch.tensor(2**40), "flag": torch.tensor(True),
               "count": 7, "done": False, "np32": np.float32(0.5), "vector": torch.tensor([1.0, 2.0]),
               "nan": torch.tensor(float("nan"))}
    for step, (key, value) in enumerate(metrics.items()):
        logger.log_metrics({key: value}, step=step)
    logger.finish()
    types = dict(rows(logger.collection, "SELECT name, type FROM columns"))
    assert [types[key] for key in metrics] == ["DOUBLE", "DOUBLE", "DOUBLE", "BIGINT", "BIGINT", "BIGINT",
                                               "BOOLEAN", "BIGINT", "BOOLEAN", "DOUBLE", "DOUBLE[]", "DOUBLE"]
    values = rows(logger.collection, f"SELECT {', '.join(metrics)} FROM records ORDER BY step")
    assert [row[index] for index, row in enumerate(values)][:-1] == [
        1.5, 1.25, 0.1, -3, 200, 2**40, True, 7, False, 0.5, [1.0, 2.0]]
    assert str(values[-1][-1]) == "nan"


# -- Keras -----------------------------------------------------------------------------------------


def keras_model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid")], name="tiny")
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="binary_crossentropy", metrics=["accuracy"])
    return model


def keras_data(samples=32):
    x = np.random.default_rng(0).random((samples, 4), dtype=np.float32)
    return x, (x.sum(axis=1) > 2).astype(np.float32)


def test_keras_fit_options_validation_split_steps_per_epoch_initial_epoch(tmp_path):
    """validation_split: validate rows per epoch with val_ names; steps_per_epoch: that many step rows an
    epoch; initial_epoch: epochs numbered from it, steps from the optimizer's count (0)."""
    x, y = keras_data()
    model = keras_model()
    with RigorousCallback(ExperimentCollection(tmp_path / "study", quiet=True)) as callback:
        model.fit(x, y, validation_split=0.25, epochs=2, batch_size=8, callbacks=[callback], verbose=0)
        model.fit(x, y, epochs=2, steps_per_epoch=2, batch_size=8, callbacks=[callback], verbose=0)
        model.fit(x, y, epochs=3, initial_epoch=2, batch_size=16, callbacks=[callback], verbose=0)
    assert rows(callback.collection, "SELECT fit, stage, level, list(DISTINCT epoch ORDER BY epoch), "
                                     "min(step), max(step), count(*), count(val_loss) FROM records "
                                     "GROUP BY ALL ORDER BY ALL") == [
        (1, "train", "epoch", [0, 1], 2, 5, 2, 0), (1, "train", "step", [0, 1], 0, 5, 6, 0),
        (1, "validate", "batch", [0, 1], 2, 5, 2, 2), (1, "validate", "epoch", [0, 1], 2, 5, 2, 2),
        (2, "train", "epoch", [0, 1], 7, 9, 2, 0), (2, "train", "step", [0, 1], 6, 9, 4, 0),
        (3, "train", "epoch", [2], 11, 11, 1, 0), (3, "train", "step", [2], 10, 11, 2, 0)]


def test_keras_evaluate_alone_records_a_test_stage(tmp_path):
    x, y = keras_data()
    with RigorousCallback(ExperimentCollection(tmp_path / "study", quiet=True)) as callback:
        keras_model().evaluate(x, y, batch_size=16, callbacks=[callback], verbose=0)
    assert rows(callback.collection, "SELECT stage, evaluate, level, step, batch_idx, loss IS NOT NULL FROM records "
                                     "ORDER BY batch_idx") == [("test", 1, "batch", 0, 0, True),
                                                               ("test", 1, "batch", 0, 1, True)]


@pytest.mark.slow  # a fresh process that imports Keras
@pytest.mark.parametrize("exception", ["ValueError", "KeyboardInterrupt"])
def test_a_keras_fit_interrupted_by_a_caught_exception_stays_failed_at_exit(exception, tmp_path):
    """A notebook or sweep catches the exception (or Ctrl-C) that stopped fit, and the process ends with no
    other call and no finish(): the run is ``error``, its records kept and marked ``interrupted``."""
    script = textwrap.dedent(f"""
        import numpy as np, keras
        from rigorous_recorder import ExperimentCollection
        from rigorous_recorder.integrations.keras import RigorousCallback

        class Stop(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                if batch == 1:
                    raise {exception}("stopped")

        x = np.random.default_rng(0).random((32, 4), dtype=np.float32)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        model.compile(optimizer="sgd", loss="mse")
        callback = RigorousCallback(ExperimentCollection({str(tmp_path / "study")!r}, quiet=True))
        try:
            model.fit(x, x[:, 0], epochs=1, batch_size=8, callbacks=[callback, Stop()], verbose=0)
        except {exception}:
            print("caught")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=ENV)
    assert (result.returncode, result.stdout) == (0, "caught\n"), result.stderr
    collection = ExperimentCollection(tmp_path / "study", quiet=True)
    assert rows(collection, "SELECT status, error, records FROM experiments") == [
        ("error", "a fit() call was interrupted: its end hook never ran", 2)]
    assert rows(collection, "SELECT batch_idx, interrupted FROM records ORDER BY batch_idx") == [(0, True), (1, True)]

