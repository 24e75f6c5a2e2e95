"""RigorousCallback with real Keras fit/evaluate/predict calls on a tiny model (torch backend)."""

import math
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

keras = pytest.importorskip("keras")
np = pytest.importorskip("numpy")

from rigorous_recorder import ExperimentCollection  # noqa: E402
from rigorous_recorder.integrations.keras import RigorousCallback  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SAMPLES, BATCH = 200, 32  # validation_split=0.2: 160 train (5 batches), 40 validation (2 batches)
ENV = {**os.environ, "KERAS_BACKEND": "torch"}


def make_model(learning_rate=0.01):
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1, activation="sigmoid")],
        name="tiny",
    )
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="binary_crossentropy", metrics=["accuracy"])
    return model


def make_data(samples=SAMPLES, seed=0):
    x = np.random.default_rng(seed).random((samples, 4), dtype=np.float32)
    return x, (x.sum(axis=1) > 2).astype(np.float32)


def rows(collection, query):
    return collection.sql(query).fetchall()


def new_callback(tmp_path, **info):
    return RigorousCallback(ExperimentCollection(tmp_path / "study", quiet=True), **info)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One experiment: fit (2 epochs, validation), evaluate, predict; finished."""
    keras.utils.set_random_seed(0)
    x, y = make_data()
    model = make_model()
    cb = new_callback(tmp_path_factory.mktemp("run"), batch_size=BATCH)
    with cb:
        history = model.fit(x, y, validation_split=0.2, epochs=2, batch_size=BATCH, callbacks=[cb], verbose=0)
        evaluated = model.evaluate(x, y, batch_size=BATCH, callbacks=[cb], verbose=0, return_dict=True)
        model.predict(x, batch_size=BATCH, callbacks=[cb], verbose=0)
    return cb, model, history.history, evaluated


def stage(cb, name):
    (model,) = cb.experiment.recorder.children
    return [child for child in model.children if child["stage"] == name]


def test_experiment_recorder_holds_the_experiment_info(run):
    """The info given to the callback is the experiment recorder's data."""
    cb, *_ = run
    assert cb.experiment.recorder["batch_size"] == BATCH


def test_model_recorder_holds_model_optimizer_and_parameters(run):
    """One model recorder: model name, optimizer class, learning rate, optimizer config, parameter count."""
    cb, model, *_ = run
    (recorder,) = cb.experiment.recorder.children
    assert (recorder["model"], recorder["optimizer"], recorder["parameters"]) == ("tiny", "Adam", model.count_params())
    assert recorder["learning_rate"] == pytest.approx(0.01)
    assert (recorder["beta_1"], recorder["amsgrad"]) == (0.9, False)


def test_stage_recorders_are_children_of_the_model(run):
    """The model's children are the stages, in the order the calls opened them."""
    cb, *_ = run
    (model,) = cb.experiment.recorder.children
    assert [child["stage"] for child in model.children] == ["train", "epoch", "validate", "test", "predict"]


def test_train_records_one_per_batch_with_epoch_batch_step_and_logs(run):
    """Each training batch is one record: epoch, batch, step, and every value in Keras's logs."""
    cb, *_ = run
    records = rows(cb.collection, "SELECT epoch, batch, step, loss IS NOT NULL, accuracy IS NOT NULL, fit "
                                  "FROM records WHERE stage = 'train' ORDER BY step")
    assert records == [(epoch, batch, 5 * epoch + batch + 1, True, True, 1) for epoch in range(2) for batch in range(5)]


def test_epoch_records_hold_every_epoch_log_including_validation(run):
    """The epoch stage has one record per epoch with exactly what History saw, val_* included."""
    cb, _, history, _ = run
    records = stage(cb, "epoch")[0].records
    assert [record["epoch"] for record in records] == [0, 1]
    for key, values in history.items():
        assert [record[key] for record in records] == pytest.approx(values), key
    assert {"val_loss", "val_accuracy"} <= set(history)


def test_query_from_the_issue_returns_validation_loss_per_epoch(run):
    """SELECT epoch, val_loss ... WHERE val_loss IS NOT NULL gives one row per epoch."""
    cb, _, history, _ = run
    result = rows(cb.collection, "SELECT epoch, val_loss FROM records WHERE val_loss IS NOT NULL ORDER BY epoch")
    assert [epoch for epoch, _ in result] == [0, 1]
    assert [loss for _, loss in result] == pytest.approx(history["val_loss"])


def test_validation_inside_fit_goes_to_the_validate_stage(run):
    """Validation batches run by fit are `validate` records with the epoch and step they followed."""
    cb, _, history, _ = run
    records = rows(cb.collection, "SELECT epoch, batch, step, fit, loss FROM records WHERE stage = 'validate' "
                                  "ORDER BY epoch, batch")
    assert [row[:4] for row in records] == [(0, 0, 5, 1), (0, 1, 5, 1), (1, 0, 10, 1), (1, 1, 10, 1)]
    assert records[1][4] == pytest.approx(history["val_loss"][0])


def test_evaluate_goes_to_the_test_stage(run):
    """evaluate() batches are `test` records of evaluate call 1, at the step the model had reached."""
    cb, _, _, evaluated = run
    records = rows(cb.collection, "SELECT batch, evaluate, step, fit, loss FROM records WHERE stage = 'test' "
                                  "ORDER BY batch")
    assert [row[:4] for row in records] == [(batch, 1, 10, None) for batch in range(math.ceil(SAMPLES / BATCH))]
    assert records[-1][4] == pytest.approx(evaluated["loss"])


def test_predict_records_batch_counts(run):
    """predict() batches are `predict` records with the number of samples of each batch."""
    cb, *_ = run
    records = rows(cb.collection, "SELECT batch, samples FROM records WHERE stage = 'predict' ORDER BY batch")
    assert [batch for batch, _ in records] == list(range(7))
    assert sum(samples for _, samples in records) == SAMPLES


def test_finished_run_is_ok(run):
    """Leaving the with block after successful calls finishes the experiment without error."""
    cb, *_ = run
    assert (cb.collection.runs[-1]["status"], cb.collection.runs[-1]["had_error"]) == ("ok", False)


def test_recorder_follows_the_running_stage_and_added_values_join_the_batch_record(tmp_path):
    """cb.recorder is the running stage's recorder; what is add()ed during a batch is in its record."""
    cb = new_callback(tmp_path)
    seen = []

    class Annotate(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            seen.append(cb.recorder["stage"])
            cb.recorder.add(note=f"train {batch}")

        def on_test_batch_begin(self, batch, logs=None):
            seen.append(cb.recorder["stage"])
            cb.recorder.add(note=f"test {batch}")

    x, y = make_data(64)
    model = make_model()
    with cb:
        model.fit(x, y, validation_split=0.5, epochs=1, batch_size=16, callbacks=[cb, Annotate()], verbose=0)
        model.evaluate(x, y, batch_size=32, callbacks=[cb, Annotate()], verbose=0)
    assert seen == ["train", "train", "validate", "validate", "test", "test"]
    records = rows(cb.collection, "SELECT stage, batch, note FROM records WHERE batch IS NOT NULL")
    assert sorted(records) == [("test", 0, "test 0"), ("test", 1, "test 1"), ("train", 0, "train 0"),
                               ("train", 1, "train 1"), ("validate", 0, "test 0"), ("validate", 1, "test 1")]


@pytest.mark.parametrize("schedule", [
    keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=3, decay_rate=0.5),  # evaluated once an epoch
    keras.optimizers.schedules.CosineDecay(0.1, 20, warmup_target=0.2, warmup_steps=5),  # not elementwise: per batch
    keras.optimizers.schedules.PiecewiseConstantDecay([5, 10], [0.1, 0.05, 0.01]),
], ids=["exponential", "cosine-warmup", "piecewise"])
def test_each_train_record_holds_the_schedules_rate_at_its_step(tmp_path, schedule):
    """Whether the callback evaluates a schedule per epoch or per batch, each record holds schedule(step - 1)."""
    model = make_model(schedule)
    cb = new_callback(tmp_path)
    x, y = make_data(128)
    with cb:
        model.fit(x, y, epochs=2, batch_size=16, callbacks=[cb], verbose=0)
    records = rows(cb.collection, "SELECT step, learning_rate FROM records WHERE stage = 'train' ORDER BY step")
    assert len(records) == 16
    assert [rate for _, rate in records] == [float(keras.ops.convert_to_numpy(schedule(step - 1))) for step, _ in records]
    assert type(schedule).__name__ in cb.experiment.recorder.children[0]["learning_rate_schedule"]


class InterruptAt(keras.callbacks.Callback):
    """Raises KeyboardInterrupt at the start of one training batch."""

    def __init__(self, batch):
        super().__init__()
        self.batch = batch
        self.raised = None

    def on_train_batch_begin(self, batch, logs=None):
        if batch == self.batch:
            self.raised = KeyboardInterrupt("stop here")
            raise self.raised


def test_keyboard_interrupt_in_a_batch_propagates_unchanged_and_marks_had_error(tmp_path):
    """A KeyboardInterrupt inside fit reaches the caller as is; the run keeps its data, had_error=True."""
    cb = new_callback(tmp_path)
    interrupt = InterruptAt(batch=3)
    x, y = make_data(160)
    with pytest.raises(KeyboardInterrupt) as caught, cb:
        make_model().fit(x, y, epochs=2, batch_size=32, callbacks=[cb, interrupt], verbose=0)
    assert caught.value is interrupt.raised
    (run,) = cb.collection.runs
    assert (run["status"], run["had_error"], run["error"]) == ("error", True, "KeyboardInterrupt: stop here")
    assert rows(cb.collection, "SELECT batch, interrupted FROM records WHERE stage = 'train' ORDER BY batch") == [
        (0, True), (1, True), (2, True)]


def test_interrupted_fit_is_noticed_by_the_next_call(tmp_path):
    """Without a with block, the next call notices the interrupted fit; evaluate() still counts as test."""
    cb = new_callback(tmp_path)
    x, y = make_data(160)
    model = make_model()
    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, validation_split=0.2, epochs=1, batch_size=32, callbacks=[cb, InterruptAt(2)], verbose=0)
    model.evaluate(x, y, batch_size=80, callbacks=[cb], verbose=0)
    cb.finish()
    (run,) = cb.collection.runs
    assert (run["had_error"], run["error"]) == (True, "RuntimeError: a fit() call was interrupted: its end hook never ran")
    assert rows(cb.collection, "SELECT stage, count(*), any_value(interrupted) FROM records GROUP BY stage ORDER BY stage") == [
        ("test", 2, None), ("train", 2, True)]


def test_uncaught_interrupt_in_a_script_finishes_the_run_as_failed(tmp_path):
    """A script killed by an uncaught KeyboardInterrupt inside fit leaves a failed run with its records."""
    script = textwrap.dedent("""
        import numpy as np, keras
        from rigorous_recorder.integrations.keras import RigorousCallback
        class Stop(keras.callbacks.Callback):
            def on_train_batch_begin(self, batch, logs=None):
                if batch == 2:
                    raise KeyboardInterrupt("ctrl-c")
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        model.compile("sgd", "mse")
        x = np.ones((128, 4), "float32")
        model.fit(x, x[:, 0], batch_size=32, callbacks=[RigorousCallback("data/study"), Stop()], verbose=0)
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=ENV, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode != 0 and "KeyboardInterrupt: ctrl-c" in done.stderr
    collection = ExperimentCollection(tmp_path / "data" / "study", quiet=True)
    (run,) = collection.runs
    assert (run["status"], run["had_error"], run["error"]) == ("error", True, "KeyboardInterrupt: ctrl-c")
    assert rows(collection, "SELECT batch FROM records WHERE stage = 'train' ORDER BY batch") == [(0,), (1,)]


def test_several_fit_calls_share_one_experiment_with_monotonic_steps(tmp_path):
    """Two fit calls: one experiment, records told apart by `fit`, steps increasing across calls."""
    cb = new_callback(tmp_path)
    x, y = make_data(96)
    model = make_model()
    with cb:
        model.fit(x, y, epochs=2, batch_size=32, callbacks=[cb], verbose=0)
        model.fit(x, y, epochs=1, batch_size=32, callbacks=[cb], verbose=0)
    assert len(cb.collection.runs) == 1
    records = rows(cb.collection, "SELECT fit, epoch, step FROM records WHERE stage = 'train' ORDER BY fit, epoch, batch")
    assert [(fit, epoch) for fit, epoch, _ in records] == [(1, 0)] * 3 + [(1, 1)] * 3 + [(2, 0)] * 3
    assert [step for *_, step in records] == list(range(1, 10))


def test_batch_end_hooks_run_in_order_on_the_training_thread(tmp_path):
    """The callback is not async_safe: Keras calls its batch-end hooks synchronously, in order."""
    threads = []

    class Probe(RigorousCallback):
        def on_train_batch_end(self, batch, logs=None):
            threads.append(threading.get_ident())
            super().on_train_batch_end(batch, logs)

    class AsyncSafe(keras.callbacks.Callback):
        async_safe = True

        def on_train_batch_end(self, batch, logs=None):
            pass

    cb = Probe(ExperimentCollection(tmp_path / "study", quiet=True))
    x, y = make_data(256)
    with cb:
        make_model().fit(x, y, validation_split=0.25, epochs=2, batch_size=16, callbacks=[AsyncSafe(), cb], verbose=0)
    assert set(threads) == {threading.get_ident()}
    in_commit_order = [(record["epoch"], record["batch"]) for name in ("train", "validate") for record in stage(cb, name)[0]]
    assert in_commit_order == [(e, b) for e in range(2) for b in range(12)] + [(e, b) for e in range(2) for b in range(4)]


def test_callback_takes_a_path_and_experiment_info(tmp_path):
    """A path makes the collection; a dict and keywords both become experiment info."""
    cb = RigorousCallback(tmp_path / "by_path", {"learning setup": "small"}, batch_size=8)
    x, y = make_data(16)
    with cb:
        make_model().predict(x, batch_size=8, callbacks=[cb], verbose=0)
    assert (tmp_path / "by_path.collection").is_dir()
    assert rows(cb.collection, 'SELECT "learning setup", batch_size, stage FROM records LIMIT 1') == [("small", 8, "predict")]


def test_callback_source_uses_no_backend_specific_code():
    """The callback reaches tensors through keras.ops only: no torch, tensorflow or jax."""
    source = (ROOT / "integrations" / "keras.py").read_text()
    for backend in ("torch", "tensorflow", "jax"):
        assert f"import {backend}" not in source and f"{backend}." not in source


def test_importing_the_package_does_not_import_keras():
    """rigorous_recorder and rigorous_recorder.integrations import without Keras."""
    code = "import sys, rigorous_recorder, rigorous_recorder.integrations; assert 'keras' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, env=ENV, timeout=60)


def test_example_runs_and_prints_a_query(tmp_path):
    """examples/keras_example.py records into data/ and prints the epoch table."""
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "keras_example.py")], cwd=tmp_path, env=ENV,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "val_loss" in done.stdout and "validate" in done.stdout
    assert (tmp_path / "data" / "keras_study.collection").is_dir()
