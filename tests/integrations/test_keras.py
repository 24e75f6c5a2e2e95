"""RigorousCallback with real Keras fit/evaluate/predict calls on a tiny model (torch backend)."""

import gc
import importlib.util
import json
import math
import os
import subprocess
import sys
import textwrap
import threading
import time
import weakref
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
    assert [child["stage"] for child in model.children] == ["train", "validate", "test", "predict"]
    assert model["model_number"] == 1


def test_train_records_one_per_batch_with_epoch_batch_idx_step_and_logs(run):
    """Each training batch is one record: epoch, batch_idx, step (0-based, as in Lightning), and Keras's logs."""
    cb, *_ = run
    records = rows(cb.collection, "SELECT epoch, batch_idx, step, loss IS NOT NULL, accuracy IS NOT NULL, fit "
                                  "FROM records WHERE stage = 'train' AND level = 'step' ORDER BY step")
    assert records == [(epoch, batch, 5 * epoch + batch, True, True, 1) for epoch in range(2) for batch in range(5)]


def test_epoch_records_hold_every_epoch_log_split_into_train_and_validate(run):
    """Each epoch's logs are two level='epoch' records: training values in train, val_* in validate."""
    cb, _, history, _ = run
    for name in ("train", "validate"):
        records = [record for record in stage(cb, name)[0] if record["level"] == "epoch"]
        assert [(record["epoch"], record["step"]) for record in records] == [(0, 4), (1, 9)]
        for key, values in history.items():
            if key.startswith("val_") == (name == "validate"):
                assert [record[key] for record in records] == pytest.approx(values), key
    assert {"val_loss", "val_accuracy"} <= set(history)


def test_query_from_the_readme_returns_validation_loss_per_epoch(run):
    """README's query: validation loss per epoch for every experiment, one row per epoch."""
    cb, _, history, _ = run
    result = rows(cb.collection, "SELECT experiment_number, epoch, val_loss FROM records "
                                 "WHERE level = 'epoch' AND stage = 'validate' ORDER BY experiment_number, epoch")
    assert [row[:2] for row in result] == [(1, 0), (1, 1)]
    assert [loss for *_, loss in result] == pytest.approx(history["val_loss"])


def test_validation_inside_fit_goes_to_the_validate_stage_with_val_names(run):
    """Validation batches run by fit are `validate` records named val_*, at the step of the epoch's last batch."""
    cb, _, history, _ = run
    records = rows(cb.collection, "SELECT epoch, batch_idx, step, fit, val_loss, loss FROM records "
                                  "WHERE stage = 'validate' AND level = 'batch' ORDER BY epoch, batch_idx")
    assert [row[:4] for row in records] == [(0, 0, 4, 1), (0, 1, 4, 1), (1, 0, 9, 1), (1, 1, 9, 1)]
    assert records[1][4] == pytest.approx(history["val_loss"][0])
    assert {row[5] for row in records} == {None}


def test_evaluate_goes_to_the_test_stage(run):
    """evaluate() batches are `test` records of evaluate call 1, at the step count the model had reached."""
    cb, _, _, evaluated = run
    records = rows(cb.collection, "SELECT batch_idx, evaluate, step, fit, loss FROM records WHERE stage = 'test' "
                                  "ORDER BY batch_idx")
    assert [row[:4] for row in records] == [(batch, 1, 10, None) for batch in range(math.ceil(SAMPLES / BATCH))]
    assert records[-1][4] == pytest.approx(evaluated["loss"])


def test_predict_records_batch_counts(run):
    """predict() batches are `predict` records with the number of samples of each batch."""
    cb, *_ = run
    records = rows(cb.collection, "SELECT batch_idx, samples FROM records WHERE stage = 'predict' ORDER BY batch_idx")
    assert [batch for batch, _ in records] == list(range(7))
    assert sum(samples for _, samples in records) == SAMPLES


def test_every_record_sees_the_learning_rate_in_force(run):
    """train, validate, test and predict records all carry the learning rate, as the float32 value Keras shows."""
    cb, model, *_ = run
    got = dict(rows(cb.collection, "SELECT stage, count(*) FILTER (WHERE learning_rate = 0.01) = count(*) "
                                   "FROM records GROUP BY stage"))
    assert got == {"train": True, "validate": True, "test": True, "predict": True}


def test_every_record_has_its_wall_time(tmp_path):
    """Train, validate, test and predict records carry wall_time: seconds since the epoch, in step order."""
    x, y = make_data()
    model, cb, before = make_model(), new_callback(tmp_path), time.time()
    with cb:
        model.fit(x, y, validation_split=0.2, epochs=2, batch_size=BATCH, callbacks=[cb], verbose=0)
        model.evaluate(x, y, batch_size=BATCH, callbacks=[cb], verbose=0)
        model.predict(x, batch_size=BATCH, callbacks=[cb], verbose=0)
    after = time.time()
    assert rows(cb.collection, "SELECT stage, level, count(*) FROM records WHERE wall_time IS NULL GROUP BY ALL") == []
    ((first, last),) = rows(cb.collection, "SELECT min(wall_time), max(wall_time) FROM records")
    assert before <= first <= last <= after
    steps = [wall_time for (wall_time,) in rows(cb.collection, "SELECT wall_time FROM records "
                                                              "WHERE level = 'step' ORDER BY step")]
    assert len(steps) == 10 and steps == sorted(steps)


#: A fit in a fresh process; prints which twin rounded the logs, then (Keras's epoch value, the stored one) pairs.
FLOAT32_FIT = textwrap.dedent("""
    import json, tempfile
    import numpy as np, keras
    from rigorous_recorder import ExperimentCollection
    from rigorous_recorder.integrations import keras as ours
    x = np.random.default_rng(0).random((96, 4), dtype=np.float32)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer=keras.optimizers.Adam(0.005), loss="binary_crossentropy", metrics=["accuracy"])
    with tempfile.TemporaryDirectory() as folder, ours.RigorousCallback(ExperimentCollection(folder, quiet=True)) as cb:
        logs = model.fit(x, x[:, 0] > 0.5, validation_split=0.25, epochs=3, batch_size=32, callbacks=[cb],
                         verbose=0).history
        stored = cb.collection.sql("SELECT loss, accuracy, val_loss, val_accuracy, learning_rate FROM records "
                                   "WHERE level = 'epoch' ORDER BY epoch, stage").fetchall()
    kept = [(logs[name][epoch], row[column]) for epoch, (train, validate) in enumerate(zip(stored[::2], stored[1::2]))
            for name, row, column in [("loss", train, 0), ("accuracy", train, 1), ("val_loss", validate, 2),
                                      ("val_accuracy", validate, 3)]]
    print(ours.seen_logs.__module__, json.dumps({"values": kept, "learning_rate": stored[0][4]}))
""")


@pytest.mark.slow  # two fresh processes that import Keras
@pytest.mark.parametrize("pure_python", ["0", "1"])
def test_float32_values_are_stored_as_keras_shows_them(pure_python):
    """Keras's float32 logs (0.005 arrives as 0.004999999888) are stored as the shortest decimal numpy shows for
    that float32, by the compiled rounding when it is built and by its Python twin without it."""
    from rigorous_recorder import _hotpath

    env = {**ENV, "RIGOROUS_RECORDER_PURE_PYTHON": pure_python}
    done = subprocess.run([sys.executable, "-c", FLOAT32_FIT], env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    module, found = done.stdout.split(maxsplit=1)
    compiled = _hotpath.COMPILED and pure_python == "0"
    assert module == ("rigorous_recorder._speedups" if compiled else "rigorous_recorder._hotpath")
    found = json.loads(found)
    assert found["learning_rate"] == 0.005
    values = found["values"]
    assert len(values) == 12 and any(float(str(np.float32(logged))) != logged for logged, _ in values)
    assert [stored for _, stored in values] == [float(str(np.float32(logged))) for logged, _ in values]


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
    records = rows(cb.collection, "SELECT stage, batch_idx, note FROM records WHERE batch_idx IS NOT NULL")
    assert sorted(records) == [("test", 0, "test 0"), ("test", 1, "test 1"), ("train", 0, "train 0"),
                               ("train", 1, "train 1"), ("validate", 0, "test 0"), ("validate", 1, "test 1")]


@pytest.mark.parametrize("schedule", [
    keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=3, decay_rate=0.5),  # evaluated once an epoch
    keras.optimizers.schedules.CosineDecay(0.1, 20, warmup_target=0.2, warmup_steps=5),  # not elementwise: per batch
    keras.optimizers.schedules.PiecewiseConstantDecay([5, 10], [0.1, 0.05, 0.01]),
], ids=["exponential", "cosine-warmup", "piecewise"])
def test_each_train_record_holds_the_schedules_rate_at_its_step(tmp_path, schedule):
    """Whether the callback evaluates a schedule per epoch or per batch, each record holds schedule(step)."""
    model = make_model(schedule)
    cb = new_callback(tmp_path)
    x, y = make_data(128)
    with cb:
        model.fit(x, y, epochs=2, batch_size=16, callbacks=[cb], verbose=0)
    records = rows(cb.collection, "SELECT step, learning_rate FROM records WHERE level = 'step' ORDER BY step")
    assert len(records) == 16
    expected = [str(keras.ops.convert_to_numpy(schedule(step)).astype("float32")) for step, _ in records]
    assert [str(rate) for _, rate in records] == expected
    assert type(schedule).__name__ in cb.experiment.recorder.children[0]["learning_rate_schedule"]


def test_a_sweep_of_three_fits_on_one_callback_keeps_each_fits_learning_rate(tmp_path):
    """Three models with different rates fit in turn with one callback: each record reads its own fit's rate."""
    cb = new_callback(tmp_path)
    x, y = make_data(64)
    with cb:
        for learning_rate in (0.1, 0.01, 0.001):
            model = make_model(learning_rate)  # the last fit's model is let go: its id may come back
            model.fit(x, y, validation_split=0.5, epochs=1, batch_size=16, callbacks=[cb], verbose=0)
    assert len(cb.collection.runs) == 1
    got = rows(cb.collection, "SELECT model_number, fit, learning_rate, count(*) FROM records "
                              "GROUP BY ALL ORDER BY model_number")
    assert got == [(1, 1, 0.1, 6), (2, 2, 0.01, 6), (3, 3, 0.001, 6)]  # per fit: 2 + 1 train, 2 + 1 validate


class SetRateBeforeEachBatch(keras.callbacks.Callback):
    """Sets the optimizer's rate before each batch: 0.1, 0.2, 0.3, then a schedule that gives 0.5."""

    def on_train_batch_begin(self, batch, logs=None):
        self.model.optimizer.learning_rate = 0.1 * (batch + 1) if batch < 3 else \
            keras.optimizers.schedules.PiecewiseConstantDecay([1000], [0.5, 0.5])


def test_a_rate_set_before_a_batch_is_the_rate_of_its_record(tmp_path):
    """A callback before ours sets the rate at each batch (a value, then a schedule): each record holds it."""
    cb = new_callback(tmp_path)
    x, y = make_data(80)
    with cb:
        make_model().fit(x, y, epochs=1, batch_size=16, callbacks=[SetRateBeforeEachBatch(), cb], verbose=0)
    assert rows(cb.collection, "SELECT learning_rate FROM records WHERE level = 'step' ORDER BY step") == [
        (0.1,), (0.2,), (0.3,), (0.5,), (0.5,)]


class BigSequential(keras.Sequential):
    """A Sequential of 824 bytes: past Python's small-object allocator, so malloc hands a freed one's
    block to the next object of its size (glibc: last freed, first taken)."""

    __slots__ = tuple(f"_pad{index}" for index in range(100))


class BigAdam(keras.optimizers.Adam):
    """An Adam of 904 bytes, another size than BigSequential's."""

    __slots__ = tuple(f"_pad{index}" for index in range(110))


def made_at(address, make, tries=20):
    """The first of up to ``tries`` objects ``make()`` returns at ``address`` (the others live meanwhile), or None."""
    others = []
    for _ in range(tries):
        made = make()
        if id(made) == address:
            return made
        others.append(made)
    return None


def make_big_model(units, optimizer=None):
    model = BigSequential([keras.Input((4,)), keras.layers.Dense(units), keras.layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer=optimizer or BigAdam(0.01), loss="binary_crossentropy")
    return model


def test_a_model_built_where_a_collected_one_was_gets_its_own_model_recorder(tmp_path):
    """A fitted model deleted and collected, then a new model and optimizer at the same addresses (same ids):
    the new one is a new model, not the dead one's recorder."""
    cb = new_callback(tmp_path)
    x, y = make_data(64)
    with cb:
        first = make_big_model(units=2)
        first.fit(x, y, epochs=1, batch_size=32, callbacks=[cb], verbose=0)
        first_ids, first_alive = (id(first), id(first.optimizer)), weakref.ref(first)
        make_model().fit(x, y, epochs=1, batch_size=32, callbacks=[cb], verbose=0)  # the callback lets go of `first`
        del first
        gc.collect()
        assert first_alive() is None
        optimizer = made_at(first_ids[1], lambda: BigAdam(0.01))
        again = made_at(first_ids[0], lambda: make_big_model(units=5, optimizer=optimizer))
        if optimizer is None or again is None:  # a heap another test file used first (a pytest-xdist worker)
            pytest.skip("the allocator gave no new object the collected one's address: nothing to test here")
        assert (id(again), id(again.optimizer)) == first_ids  # what this test is about: the ids came back
        again.fit(x, y, epochs=1, batch_size=32, callbacks=[cb], verbose=0)
    got = rows(cb.collection, "SELECT model_number, fit, parameters, count(*) FROM records "
                              "WHERE level = 'step' GROUP BY ALL ORDER BY fit")
    assert got == [(1, 1, 4 * 2 + 2 + 2 + 1, 2), (2, 2, 4 * 8 + 8 + 8 + 1, 2), (3, 3, 4 * 5 + 5 + 5 + 1, 2)]


def test_evaluate_and_predict_after_a_scheduled_fit_see_the_rate_in_force(tmp_path):
    """With a decaying schedule, every record of every stage holds schedule(step), not the initial rate."""
    schedule = keras.optimizers.schedules.ExponentialDecay(0.01, decay_steps=3, decay_rate=0.5, staircase=True)
    model, cb = make_model(schedule), new_callback(tmp_path)
    x, y = make_data(100)  # 80 to train (5 batches of 16), 20 to validate
    with cb:
        model.fit(x, y, validation_split=0.2, epochs=2, batch_size=16, callbacks=[cb], verbose=0)
        model.evaluate(x, y, batch_size=50, callbacks=[cb], verbose=0)
        model.predict(x, batch_size=50, callbacks=[cb], verbose=0)
    records = rows(cb.collection, "SELECT stage, step, learning_rate FROM records")
    assert {stage for stage, *_ in records} == {"train", "validate", "test", "predict"}
    expected = {step: str(keras.ops.convert_to_numpy(schedule(step)).astype("float32")) for _, step, _ in records}
    assert [(stage, step, str(rate)) for stage, step, rate in records] == [
        (stage, step, expected[step]) for stage, step, _ in records]
    assert rows(cb.collection, "SELECT DISTINCT step, learning_rate FROM records WHERE stage IN ('test', 'predict')") \
        == [(10, 0.00125)]


def test_values_added_under_the_callbacks_keys_are_kept_under_user(tmp_path):
    """An add()-ed step or epoch meets the callback's own: both stay, the user's as user/<key>."""
    cb = new_callback(tmp_path)

    class AddClashing(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            cb.recorder.add(step=-1, epoch="mine")

    x, y = make_data(48)
    with cb:
        make_model().fit(x, y, batch_size=16, epochs=1, callbacks=[cb, AddClashing()], verbose=0)
    got = rows(cb.collection, 'SELECT step, epoch, "user/step", "user/epoch" FROM records WHERE level = \'step\' '
                              "ORDER BY step")
    assert got == [(0, 0, -1, "mine"), (1, 0, -1, "mine"), (2, 0, -1, "mine")]



class ComplexMetric(keras.Sequential):
    """Reports a complex metric ``z`` with its loss: Keras's own CSVLogger writes it as ``(1+2j)``."""

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        return {**super().compute_metrics(x, y, y_pred, sample_weight),
                "z": keras.ops.convert_to_tensor(np.complex64(1 + 2j))}


def test_a_complex_metric_is_kept_as_its_text_with_one_warning_per_key(tmp_path, recwarn):
    """A logged value a record cannot store neither stops fit nor loses a row: it is stored as its text, as Keras's
    CSVLogger writes it, with one warning per key (``z``, and ``val_z`` of the validation)."""
    model = ComplexMetric([keras.Input((4,)), keras.layers.Dense(1)], name="complex")
    model.compile(optimizer="sgd", loss="mse")
    x, y = make_data(64)
    cb = new_callback(tmp_path)
    with cb:
        model.fit(x, y, batch_size=16, epochs=2, validation_split=0.25, callbacks=[cb], verbose=0)
        model.evaluate(x, y, batch_size=32, callbacks=[cb], verbose=0)
    assert cb.collection.runs[0]["status"] == "ok"
    got = rows(cb.collection, "SELECT stage, level, count(*), count(loss), min(z), max(z), min(val_z), max(val_z) "
                              "FROM records GROUP BY ALL ORDER BY ALL")
    assert got == [("test", "batch", 2, 2, "(1+2j)", "(1+2j)", None, None),
                   ("train", "epoch", 2, 2, "(1+2j)", "(1+2j)", None, None),
                   ("train", "step", 6, 6, "(1+2j)", "(1+2j)", None, None),
                   ("validate", "batch", 2, 0, None, None, "(1+2j)", "(1+2j)"),
                   ("validate", "epoch", 2, 0, None, None, "(1+2j)", "(1+2j)")]
    ours = sorted(str(warning.message) for warning in recwarn if "rigorous_recorder" in str(warning.message))
    assert ours == [f"rigorous_recorder: metric {key!r} holds a complex, which a record cannot store: kept as its text "
                    "('(1+2j)'), as Keras's CSVLogger writes it" for key in ("val_z", "z")]


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
    assert rows(cb.collection, "SELECT batch_idx, interrupted FROM records WHERE stage = 'train' ORDER BY 1") == [
        (0, True), (1, True), (2, True)]


def test_interrupted_fit_stays_failed_and_the_next_call_is_a_new_attempt(tmp_path):
    """A caught interrupt: the next call ends that run as failed and records in a new attempt of the same number.

    (A successful attempt ends with error_number 0, as every successful run.)
    """
    cb = new_callback(tmp_path)
    x, y = make_data(160)
    model = make_model()
    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, validation_split=0.2, epochs=1, batch_size=32, callbacks=[cb, InterruptAt(2)], verbose=0)
    model.evaluate(x, y, batch_size=80, callbacks=[cb], verbose=0)
    cb.finish()
    runs = [(run["experiment_number"], run["error_number"], run["status"], run["error"]) for run in cb.collection.runs]
    assert runs == [(1, 1, "error", "a fit() call was interrupted: its end hook never ran"), (1, 0, "ok", None)]
    assert rows(cb.collection, "SELECT error_number, stage, count(*), any_value(interrupted) FROM records "
                               "GROUP BY ALL ORDER BY 1") == [(0, "test", 2, None), (1, "train", 2, True)]


@pytest.mark.slow
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
    assert rows(collection, "SELECT batch_idx FROM records WHERE stage = 'train' ORDER BY 1") == [(0,), (1,)]


@pytest.mark.slow
def test_a_run_records_its_git_state_command_and_versions(tmp_path):
    """Run from a git work tree with a changed file: the context holds the commit, git_dirty, the command
    and Keras's and torch's versions, with no user code."""
    import torch

    def git(*args):
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                              capture_output=True, text=True).stdout.strip()

    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent("""
        import numpy as np, keras
        from rigorous_recorder.integrations.keras import RigorousCallback
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        model.compile("sgd", "mse")
        x = np.ones((32, 4), "float32")
        with RigorousCallback("data/study") as callback:
            model.fit(x, x[:, 0], batch_size=16, callbacks=[callback], verbose=0)
    """))
    git("init", "-q")
    git("add", "train.py")
    git("commit", "-q", "-m", "train")
    script.write_text(script.read_text() + "# changed after the commit\n")
    subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=ENV, check=True, capture_output=True, timeout=120)
    (run,) = ExperimentCollection(tmp_path / "data" / "study", quiet=True).runs
    context = run["context"]
    assert (context["git_commit"], context["git_dirty"]) == (git("rev-parse", "HEAD"), True)
    assert (context["keras_version"], context["torch_version"]) == (keras.__version__, torch.__version__)
    assert context["command"] == f"{sys.executable} {script}"

def test_several_fit_calls_share_one_experiment_with_monotonic_steps(tmp_path):
    """Two fit calls: one experiment, records told apart by `fit`, steps (optimizer iterations) increasing."""
    cb = new_callback(tmp_path)
    x, y = make_data(96)
    model = make_model()
    with cb:
        model.fit(x, y, epochs=2, batch_size=32, callbacks=[cb], verbose=0)
        model.fit(x, y, epochs=1, batch_size=32, callbacks=[cb], verbose=0)
    assert len(cb.collection.runs) == 1
    records = rows(cb.collection, "SELECT fit, epoch, step FROM records WHERE level = 'step' ORDER BY fit, epoch, batch_idx")
    assert [(fit, epoch) for fit, epoch, _ in records] == [(1, 0)] * 3 + [(1, 1)] * 3 + [(2, 0)] * 3
    assert [step for *_, step in records] == list(range(9))


class CrashAtEpoch(keras.callbacks.Callback):
    """Raises RuntimeError at the start of one epoch."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError("crash")


def test_a_fit_resumed_by_backup_and_restore_continues_the_step_axis(tmp_path):
    """README's resume pattern: the crashed attempt stays failed; the resumed fit's steps go on from the backup's.

    Our callback comes first in the list, so it starts before BackupAndRestore restores the optimizer.
    """
    x, y = make_data(64)
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    cb = new_callback(tmp_path, name="net-a")
    with pytest.raises(RuntimeError, match="crash"):
        make_model().fit(x, y, batch_size=16, epochs=4, callbacks=[cb, backup, CrashAtEpoch(2)], verbose=0)
    cb.finish()
    with new_callback(tmp_path, name="net-a") as cb:
        make_model().fit(x, y, batch_size=16, epochs=4, callbacks=[cb, backup], verbose=0)
    got = rows(cb.collection, "SELECT error_number, min(epoch), max(epoch), min(step), max(step), count(*) "
                              "FROM records WHERE level = 'step' AND name = 'net-a' GROUP BY ALL ORDER BY 1")
    assert got == [(0, 2, 3, 8, 15, 8), (1, 0, 1, 0, 7, 8)]

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
    in_commit_order = [(record["epoch"], record["batch_idx"]) for name in ("train", "validate")
                       for record in stage(cb, name)[0] if record["level"] != "epoch"]
    assert in_commit_order == [(e, b) for e in range(2) for b in range(12)] + [(e, b) for e in range(2) for b in range(4)]


def test_callback_takes_a_path_and_experiment_info(tmp_path):
    """A path makes the collection; a dict and keywords both become experiment info."""
    cb = RigorousCallback(tmp_path / "by_path", {"learning setup": "small"}, batch_size=8)
    x, y = make_data(16)
    with cb:
        make_model().predict(x, batch_size=8, callbacks=[cb], verbose=0)
    assert (tmp_path / "by_path.collection").is_dir()
    assert rows(cb.collection, 'SELECT "learning setup", batch_size, stage FROM records LIMIT 1') == [("small", 8, "predict")]



@pytest.mark.parametrize("quiet", [True, False, None])
def test_the_callback_prints_nothing_unless_asked(tmp_path, capfd, quiet):
    """Like Keras's CSVLogger the callback prints nothing by default; ``quiet=False`` prints where the run
    starts and where it was saved, as the collection's own lines on stderr."""
    x, y = make_data(32)
    model = make_model()
    with RigorousCallback(tmp_path / "study", **({} if quiet is None else {"quiet": quiet})) as cb:
        model.fit(x, y, batch_size=16, epochs=1, callbacks=[cb], verbose=0)
    out, err = capfd.readouterr()
    assert "quiet" not in cb.experiment.recorder.local_data
    ours = [line for line in err.splitlines() if line.startswith("rigorous_recorder:")]
    if quiet is False:
        assert (out, ours) == ("", [f"rigorous_recorder: new collection {tmp_path / 'study.collection'}",
                                    f"rigorous_recorder: experiment 1 started ({cb.experiment.id})",
                                    f"rigorous_recorder: experiment 1 saved: 3 records in {cb.experiment.folder.path}"])
    else:
        assert (out, err) == ("", "")


def test_info_meeting_the_callbacks_keys_is_kept_under_user(tmp_path):
    """Experiment info named like a key the callback sets (step, model, wall_time) is kept as user/<key>."""
    with pytest.warns(UserWarning, match="'user/step'"):
        cb = RigorousCallback(ExperimentCollection(tmp_path / "study", quiet=True), step=5, model="mine",
                              wall_time="noon")
    x, y = make_data(32)
    with cb:
        make_model().fit(x, y, batch_size=16, callbacks=[cb], verbose=0)
    got = rows(cb.collection, 'SELECT DISTINCT "user/step", "user/model", model, "user/wall_time", wall_time > 1e9 '
                              "FROM records")
    assert got == [(5, "mine", "tiny", "noon", True)]


def test_keras_without_its_backend_names_the_backend_and_keras_backend(tmp_path):
    """Keras installed, its backend not: the import error names the backend and the KERAS_BACKEND variable."""
    if importlib.util.find_spec("tensorflow") is not None:
        pytest.skip("tensorflow is installed: Keras's default backend imports")
    env = {key: value for key, value in ENV.items() if key != "KERAS_BACKEND"}
    code = "from rigorous_recorder.integrations.keras import RigorousCallback"
    done = subprocess.run([sys.executable, "-c", code], env={**env, "HOME": str(tmp_path), "KERAS_HOME": str(tmp_path)},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "cannot import its backend 'tensorflow'" in done.stderr and "KERAS_BACKEND" in done.stderr


def test_importing_the_package_does_not_import_keras():
    """rigorous_recorder and rigorous_recorder.integrations import without Keras."""
    code = "import sys, rigorous_recorder, rigorous_recorder.integrations; assert 'keras' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, env=ENV, timeout=60)


@pytest.mark.slow
def test_example_runs_and_prints_a_query(tmp_path):
    """examples/keras_example.py records into data/ and prints the epoch table."""
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "keras_example.py")], cwd=tmp_path, env=ENV,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    recorded = ExperimentCollection(tmp_path / "data" / "keras_study", create=False, quiet=True)
    (stages, losses), = recorded.sql("SELECT count(DISTINCT stage), count(val_loss) FROM records").fetchall()
    assert stages >= 2 and losses > 0, done.stdout
    assert (tmp_path / "data" / "keras_study.collection").is_dir()
