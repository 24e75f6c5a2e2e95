"""``collection.to_spark(spark)``: the flat table as a Spark DataFrame, on a real local Spark."""

from __future__ import annotations

import pytest

pyspark = pytest.importorskip("pyspark")

from pyspark.sql import SparkSession  # noqa: E402

from rigorous_recorder import ExperimentCollection, Recorder  # noqa: E402


@pytest.fixture(scope="session")
def spark():
    """One local Spark session for the whole test run, without UI and with one shuffle partition.

    Its JVM starts in 10-40 s on two cores, and each job takes seconds: the tests using it are slow.
    """
    session = (
        SparkSession.builder.master("local[1]")
        .appName("rigorous-recorder-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "1")
        .config("spark.sql.session.timeZone", "UTC")
        .getOrCreate()
    )
    yield session
    session.stop()


def rows(frame) -> list[tuple]:  # noqa: ANN001
    """The rows of a pandas DataFrame as sorted tuples, NaN read as None."""
    return sorted(
        (tuple(None if value != value else value for value in row) for row in frame.itertuples(index=False)),
        key=repr,
    )


@pytest.mark.slow
def test_to_spark_equals_to_pandas(spark, study):
    """The Spark DataFrame has the columns and rows of ``to_pandas()``."""
    expected = study.to_pandas()
    actual = study.to_spark(spark).toPandas()
    assert list(actual.columns) == list(expected.columns)
    assert rows(actual) == rows(expected)


@pytest.mark.slow
def test_to_spark_answers_a_grouped_query_like_sql(spark, study):
    """A Spark group-by gives the same averages as the same DuckDB query."""
    frame = study.to_spark(spark).where("NOT had_error").groupBy("model").avg("loss")
    spark_rows = sorted((row["model"], row["avg(loss)"]) for row in frame.collect())
    duckdb_rows = study.sql(
        "SELECT model, avg(loss) FROM records WHERE NOT had_error GROUP BY model ORDER BY model"
    ).fetchall()
    assert spark_rows == duckdb_rows == [("a", 1.0), ("b", 1.5)]


@pytest.mark.slow
def test_to_spark_includes_a_running_experiment(spark, study):
    """Records of a run that is still recording are in the Spark DataFrame too."""
    experiment = study.new_experiment(lr=0.3)
    Recorder(model="live").set_parent(experiment.recorder).push(step=0, loss=1.0)
    frame = study.to_spark(spark)
    assert frame.where("model = 'live'").select("lr", "step", "experiment_number").collect() == [(0.3, 0, 2)]
    assert frame.count() == 8
    experiment.finish()


@pytest.mark.slow
def test_to_spark_names_and_splits_columns_like_the_duckdb_view(spark, tmp_path):
    """Case twins, a drifted value, an own-versus-inherited clash and a running run: Spark's
    columns and values are those of ``to_pandas()``, names and companion columns included."""
    collection = ExperimentCollection(tmp_path / "hostile", quiet=True)
    with collection.new_experiment(seed=42) as recorder:
        Recorder(model="a").set_parent(recorder).push(Loss=1.0, loss=2.0, step=0).push(loss=3.0, step=1, seed="42-b")
    with collection.new_experiment(seed=7) as recorder:
        recorder.push(loss="nan!", step=0, **{"a~b": 1})
    running = collection.new_experiment(seed=9)
    running.recorder.push(loss=0.5, step=0)
    expected = collection.sql("SELECT * FROM records")
    actual = collection.to_spark(spark)
    assert actual.columns == expected.columns
    assert {"Loss~2", "loss~json", "seed~json", "a~~b"} <= set(actual.columns)
    assert sorted(map(tuple, actual.collect()), key=repr) == sorted(expected.fetchall(), key=repr)
    running.finish()


#: A process whose running experiments (more than collection.py keeps the views of) are held only by
#: the process-wide registry, after queries made their collections open DuckDB connections; it then
#: forks a child the way pyspark launches its JVM.
FORK_AFTER_QUERIES = """
import subprocess, sys
from rigorous_recorder import ExperimentCollection

def record_and_query(path):
    collection = ExperimentCollection(path, quiet=True)
    experiment = collection.new_experiment()
    experiment.recorder.push(step=0)
    collection.sql("SET threads TO 4")  # DuckDB's worker threads, on a machine of any size
    collection.sql("SELECT count(*) FROM records").fetchall()

for index in range(12):
    record_and_query(f"{sys.argv[1]}/study{index}")
print(subprocess.Popen(["true"], preexec_fn=lambda: None).wait())
"""


def test_a_forked_child_survives_running_experiments_whose_collections_were_queried(tmp_path):
    """pyspark starts its JVM through a fork with a preexec_fn (JAVA_GATEWAY_EXITED when the child dies):
    the child must not die of what the recording process holds."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", FORK_AFTER_QUERIES, str(tmp_path)],
                            capture_output=True, text=True, timeout=120)
    assert result.stdout.split() == ["0"], result.stderr
