"""The seed README's ExperimentCollection example and its analysis, run verbatim."""

from __future__ import annotations

import pytest


def run_seed_example() -> dict[str, object]:
    """The README's "Project/Experiment collection usage" code, verbatim; returns its variables."""
    from rigorous_recorder import RecordKeeper, ExperimentCollection

    from statistics import mean as average
    from random import random, sample, choices

    collection = ExperimentCollection("data/my_study") # <- filepath 
    number_of_new_experiments = 1

    for _ in range(number_of_new_experiments):
        
        # at the end (even when an error is thrown), all data is saved to disk automatically
        # experiment number increments based on the last saved-to-disk experiment number
        # running again (after error) won't double-increment the experiment number (same number until non-error run is achieved)
        with collection.new_experiment() as experiment_recorder:
            # we can create a hierarchy like this:
            # 
            #                          experiment_recorder
            #                           /              \
            #               model1_recorder           model2_recorder
            #                /        |                 |           \
            # m1_train_recorder m1_test_recorder   m2_test_recorder m2_train_recorder
            # 
            model1_recorder = RecordKeeper(model="model1").set_parent(experiment_recorder)
            model2_recorder = RecordKeeper(model="model2").set_parent(experiment_recorder)
            
            # 
            # training
            # 
            model1_train_recorder = RecordKeeper(training=True).set_parent(model1_recorder)
            model2_train_recorder = RecordKeeper(training=True).set_parent(model2_recorder)
            for each_index in range(100_000):
                # one approach
                model1_train_recorder.push(index=each_index, loss=random())
                
                # alternative approach (same outcome)
                model2_train_recorder.add(index=each_index)
                # - this way is very handy for adding data in one method (like a loss func)
                #   while calling .commit() in a different method (like update weights)
                model2_train_recorder.add({ "loss": random() })
                model2_train_recorder.commit()
                
            # 
            # testing
            # 
            model1_test_recorder = RecordKeeper(testing=True).set_parent(model1_recorder)
            model2_test_recorder = RecordKeeper(testing=True).set_parent(model2_recorder)
            for each_index in range(500):
                # one method
                model1_test_recorder.push(
                    index=each_index,
                    accuracy=random(),
                )
                
                # alternative way (same outcome)
                model2_test_recorder.add(index=each_index, accuracy=random())
                model2_test_recorder.commit()


    # 
    # 
    # Analysis
    # 
    # 

    all_records = collection.records
    print("first record", all_records[0]) # behaves just like a regular dictionary

    # slice across both models (first 500 training records from both models)
    records_first_half_of_time = tuple(each for each in all_records if each["training"] and each["index"] < 500)
    # average loss across both models
    first_half_average_loss = average(tuple(each["loss"] for each in records_first_half_of_time))
    # average only for model 1
    model1_first_half_loss = average(tuple(each["loss"] for each in records_first_half_of_time if each["model"] == "model1"))
    # average only for model 2
    model2_first_half_loss = average(tuple(each["loss"] for each in records_first_half_of_time if each["model"] == "model2"))
    return locals()


@pytest.fixture(scope="module")
def seed(tmp_path_factory):
    """The variables of one verbatim run of the seed example, in a fresh working folder."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path_factory.mktemp("seed"))
        yield run_seed_example()


def test_seed_example_stores_its_collection_under_data(seed):
    """``ExperimentCollection("data/my_study")`` keeps one successful run in data/my_study.collection."""
    collection = seed["collection"]
    assert collection.path.parts[-2:] == ("data", "my_study.collection")
    assert [(run["experiment_number"], run["status"]) for run in collection.runs] == [(1, "ok")]


def test_seed_example_records_every_push_and_commit(seed):
    """The run holds 2 x 100,000 training records and 2 x 500 testing records."""
    counts = seed["collection"].sql(
        "SELECT model, training, testing, count(*), min(index), max(index) FROM records "
        "GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    assert counts == [
        ("model1", True, None, 100_000, 0, 99_999), ("model1", None, True, 500, 0, 499),
        ("model2", True, None, 100_000, 0, 99_999), ("model2", None, True, 500, 0, 499),
    ]
    assert len(seed["all_records"]) == 201_000


def test_seed_example_first_record_behaves_like_a_dict(seed):
    """The first record reads its own keys, its lineage and the six keys, and None for a missing key."""
    first = seed["all_records"][0]
    assert (first["model"], first["training"], first["index"], first["experiment_number"]) == ("model1", True, 0, 1)
    assert first["had_error"] is False
    assert first["testing"] is None
    assert 0 <= first["loss"] < 1


def test_seed_example_slice_takes_first_500_training_records_of_both_models(seed):
    """The analysis slice holds indexes 0..499 of each model's training records."""
    sliced = seed["records_first_half_of_time"]
    assert sorted((each["model"], each["index"]) for each in sliced) == sorted(
        (model, index) for model in ("model1", "model2") for index in range(500)
    )


def test_seed_example_averages_match_sql(seed):
    """The three averages of the analysis equal the same averages computed by DuckDB."""
    averages = dict(seed["collection"].sql(
        "SELECT coalesce(model, 'both'), avg(loss) FROM records WHERE training AND index < 500 "
        "GROUP BY ROLLUP (model)"
    ).fetchall())
    assert seed["first_half_average_loss"] == pytest.approx(averages["both"], rel=1e-12)
    assert seed["model1_first_half_loss"] == pytest.approx(averages["model1"], rel=1e-12)
    assert seed["model2_first_half_loss"] == pytest.approx(averages["model2"], rel=1e-12)


def test_seed_example_averages_match_pandas(seed):
    """The per-model averages of the analysis equal a pandas recomputation from to_pandas()."""
    frame = seed["collection"].to_pandas()
    first_half = frame[(frame["training"] == True) & (frame["index"] < 500)]  # noqa: E712
    by_model = first_half.groupby("model")["loss"].mean()
    assert seed["model1_first_half_loss"] == pytest.approx(by_model["model1"], rel=1e-12)
    assert seed["model2_first_half_loss"] == pytest.approx(by_model["model2"], rel=1e-12)
    assert seed["first_half_average_loss"] == pytest.approx(first_half["loss"].mean(), rel=1e-12)
