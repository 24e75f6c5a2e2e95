"""ExperimentCollection: numbered experiments stored on disk, crash-safe, queryable.

``ExperimentCollection("data/my_study")`` stores in ``data/my_study.collection``. Each
``new_experiment()`` is one run in its own folder (see ``store``). Numbering follows the
seed: after a successful run the next number; after a failed or crashed run the same
number again, ``error_number`` counting the consecutive failures. Every record of a run
sees six bookkeeping keys through the experiment recorder's parent: experiment_number,
error_number, had_error, experiment_start_time, experiment_end_time, experiment_duration.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock

from ._files import atomic_write_text
from ._tree_file import TreeNode, build_recorders, read_tree_metadata
from ._values import normalize_mapping
from .errors import CollectionError
from .record import RecordSequence
from .recorder import Recorder
from .store.run_folder import CRASHED, ERROR, EXPERIMENT_ID, OK, RUNNING, RunFolder, bookkeeping
from .store.run_store import RunStore

if TYPE_CHECKING:
    from types import TracebackType

    import duckdb
    import pandas
    import polars
    import pyarrow as pa
    import pyspark.sql

SUFFIX = ".collection"
FORMAT_VERSION = 1


class Experiment:
    """One running experiment: its recorder, and ``finish()``; also a context manager.

    ``with collection.new_experiment() as recorder:`` yields :attr:`recorder` and finishes the
    run at the end of the block, marking it failed (and re-raising) if an exception escapes.
    """

    def __init__(self, collection: ExperimentCollection, folder: RunFolder, info: dict[str, Any],
                 root: Recorder, store: RunStore) -> None:
        self.collection = collection
        self.folder = folder
        self.info = info
        self.root = root
        #: The experiment's recorder: the experiment info, and the parent of your recorders.
        self.recorder = next(child for child in root.children if child.store_id == EXPERIMENT_ID)
        self._store = store

    @property
    def id(self) -> str:
        """The run's id (its folder name); give it to ``collection.resume()`` to reopen it."""
        return self.folder.id

    @property
    def number(self) -> int:
        """The experiment number."""
        return self.info["experiment_number"]

    @property
    def finished(self) -> bool:
        """True once :meth:`finish` has run."""
        return self.info["status"] != RUNNING

    def flush(self) -> None:
        """Write everything recorded so far to disk, safe from a kill -9."""
        self._store.flush()

    def finish(self, error: BaseException | None = None) -> None:
        """End the run: record times and outcome, write the records as one Parquet file."""
        if self.finished:
            return
        end = time.time()
        failed = error is not None
        self.info.update(
            status=ERROR if failed else OK,
            had_error=failed,
            error_number=self.info["error_number"] if failed else 0,
            experiment_end_time=end,
            experiment_duration=end - self.info["experiment_start_time"],
            error=f"{type(error).__name__}: {error}" if failed else None,
        )
        self.root.update(bookkeeping(self.info))
        self._store.close()
        self.info = self.folder.compact(self.info)
        self._store.read_from({node.id: node.batches for node in self.folder.nodes(self.info)})
        self.collection._finished(self)
        if not self.collection.quiet:
            outcome = f"failed ({self.info['error']})" if failed else "saved"
            print(
                f"rigorous_recorder: experiment {self.number} {outcome}: "
                f"{self.info['records_count']:,} records in {self.folder.path}",
                file=sys.stderr,
            )

    def __enter__(self) -> Recorder:
        return self.recorder

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.finish(error)

    def __repr__(self) -> str:
        return f"Experiment(number={self.number}, id={self.id!r}, status={self.info['status']!r})"


class ExperimentCollection:
    """Every run of a study, on disk in ``path + ".collection"``.

    Args:
        path: where to store; ``.collection`` is appended unless already there.
        quiet: print nothing.
        flush_interval: seconds between automatic flushes while an experiment runs.
        create: make the collection if it does not exist (else raise CollectionError).
        recover: finish the runs whose process died now (else :meth:`recover` does it).
    """

    def __init__(self, path: str | os.PathLike[str], quiet: bool = False, *,
                 flush_interval: float = 1.0, create: bool = True, recover: bool = True) -> None:
        text = os.fspath(path).rstrip("/\\") or os.fspath(path)
        self.path = Path(text if text.endswith(SUFFIX) else text + SUFFIX).absolute()
        self.quiet = quiet
        self.flush_interval = flush_interval
        self._active: dict[str, Experiment] = {}
        self._trees: dict[tuple[str, str], Recorder] = {}
        self._query_cache: Any = None
        if not (self.path / "collection.json").is_file():
            if not create:
                raise CollectionError(f"{str(self.path)!r} is not a rigorous_recorder collection")
            if self.path.exists() and not self.path.is_dir():
                raise CollectionError(f"{str(self.path)!r} exists and is not a folder")
        (self.path / "runs").mkdir(parents=True, exist_ok=True)
        self._numbering = FileLock(self.path / "numbering.lock")
        import duckdb  # the query engine starts with the collection, not at its first query

        self._database = duckdb.connect()
        with self._numbering:
            if not (self.path / "collection.json").is_file():
                atomic_write_text(
                    self.path / "collection.json",
                    json.dumps({"format": FORMAT_VERSION, "id": uuid.uuid4().hex, "created": time.time()}),
                )
                if not quiet:
                    print(f"rigorous_recorder: new collection {self.path}", file=sys.stderr)
            if recover:
                self.recover()

    # -- running experiments -------------------------------------------------------------

    def new_experiment(self, experiment_info: dict[str, Any] | None = None, **kwargs: Any) -> Experiment:
        """Start a run now; use it as ``with collection.new_experiment(**info) as recorder:``."""
        data = normalize_mapping(experiment_info, kwargs)
        with self._numbering:
            self.recover()
            number, error_number = _next_number([info for _, info in self._scan()])
            run_id = f"{number:06d}-{uuid.uuid4().hex[:10]}"
            folder = RunFolder(self.path / "runs" / run_id)
            folder.path.mkdir()
            info = {
                "id": run_id,
                "experiment_number": number,
                "error_number": error_number,
                "had_error": True,  # until it succeeds: a crash leaves it True
                "status": RUNNING,
                "experiment_start_time": time.time(),
                "experiment_end_time": None,
                "experiment_duration": None,
                "session": 1,
                **_this_process(),
            }
            folder.write_info(info)
        root = Recorder(bookkeeping(info))
        Recorder(data).set_parent(root)
        store = RunStore(folder, info["session"], self.flush_interval)
        store.take(root)
        return self._started(Experiment(self, folder, info, root, store))

    def resume(self, run_id: str) -> Experiment:
        """Reopen a finished or crashed run to record more: same number, same recorders."""
        with self._numbering:
            self.recover()
            folder, info = self._find(run_id)
            if info["status"] == RUNNING:
                raise CollectionError(f"run {run_id!r} is still running (pid {info['pid']} on {info['host']})")
            nodes = folder.nodes(info)
            info.update(status=RUNNING, had_error=True, experiment_end_time=None, experiment_duration=None,
                        session=info.get("session", 1) + 1, **_this_process())
            folder.write_info(info)
        recorders = build_recorders([TreeNode(node.id, node.parent, node.local_data) for node in nodes])
        earlier = {node.id: _cached(node.batches) for node in nodes}
        rows = _row_counts(folder, info, earlier)
        for node_id, recorder in recorders.items():
            recorder.store_id = node_id
            recorder._sealed_rows = rows.get(node_id, 0)  # so len(recorder) counts the earlier records
        store = RunStore(folder, info["session"], self.flush_interval, known=recorders, earlier=earlier)
        root = next(recorder for recorder in recorders.values() if recorder.parent is None)
        store.take(root)
        root.update(bookkeeping(info))
        return self._started(Experiment(self, folder, info, root, store))

    def flush(self) -> None:
        """Write everything the running experiments recorded so far, safe from a kill -9."""
        for experiment in list(self._active.values()):
            experiment.flush()

    def recover(self) -> list[str]:
        """Finish runs whose process died: compact their flushed records, mark them crashed.

        Returns the ids of the runs it finished.
        """
        recovered = []
        for folder, info in self._scan():
            if info["status"] != RUNNING or _alive(info):
                continue
            end = max((path.stat().st_mtime for path in folder.path.rglob("*") if path.is_file()), default=time.time())
            info.update(status=CRASHED, had_error=True, experiment_end_time=end,
                        experiment_duration=end - info["experiment_start_time"],
                        error=f"the process (pid {info['pid']}) died without finishing the run")
            folder.compact(info)
            recovered.append(folder.id)
            if not self.quiet:
                print(f"rigorous_recorder: experiment {info['experiment_number']} ({folder.id}) crashed; "
                      "its flushed records are kept", file=sys.stderr)
        return recovered

    def _started(self, experiment: Experiment) -> Experiment:
        self._active[experiment.id] = experiment
        experiment.flush()
        if not self.quiet:
            print(f"rigorous_recorder: experiment {experiment.number} started ({experiment.id})", file=sys.stderr)
        return experiment

    def _finished(self, experiment: Experiment) -> None:
        self._active.pop(experiment.id, None)

    # -- reading -------------------------------------------------------------------------

    def _scan(self) -> list[tuple[RunFolder, dict[str, Any]]]:
        runs = []
        for path in (self.path / "runs").iterdir():
            if not path.is_dir():
                continue  # a stray file (a copied pickle, an editor's backup) is no run
            folder = RunFolder(path)
            try:
                info = folder.read_info()
            except (FileNotFoundError, json.JSONDecodeError):
                continue  # a run being created right now
            runs.append((folder, info))
        runs.sort(key=lambda run: (run[1]["experiment_start_time"], run[0].id))
        return runs

    def _find(self, run_id: str) -> tuple[RunFolder, dict[str, Any]]:
        for folder, info in self._scan():
            if folder.id == run_id:
                return folder, info
        raise CollectionError(f"no run {run_id!r} in {str(self.path)!r}")

    @property
    def runs(self) -> list[dict[str, Any]]:
        """Each run's bookkeeping (run.json), oldest first."""
        return [info for _, info in self._scan()]

    def _root(self, folder: RunFolder, info: dict[str, Any]) -> Recorder:
        """The run's tree: the live one for a run of this process, else read from disk."""
        active = self._active.get(folder.id)
        if active is not None:
            return active.root
        key = (folder.id, info.get("records") if info["status"] != RUNNING else None)
        tree = self._trees.get(key)
        if tree is None:
            nodes = folder.nodes(info)
            recorders = build_recorders(nodes)
            tree = next(recorder for recorder in recorders.values() if recorder.parent is None)
            if key[1] is not None:
                self._trees[key] = tree
        return tree

    @property
    def records(self) -> RecordSequence:
        """Every record of every run, oldest run first; each acts like a dict."""
        return RecordSequence.concat(self._root(folder, info).all_records for folder, info in self._scan())

    def __len__(self) -> int:
        """The number of records of every run (a stopped run's count is in its run.json)."""
        return sum(
            info["records_count"] if info["status"] != RUNNING and "records_count" in info
            else len(self._root(folder, info).all_records)
            for folder, info in self._scan()
        )

    @property
    def experiment_numbers(self) -> tuple[int, ...]:
        """The experiment numbers in the collection, ascending."""
        return tuple(sorted({info["experiment_number"] for _, info in self._scan()}))

    def __getitem__(self, number: int) -> tuple[Any, ...]:
        """The records of experiment ``number`` (every run of it); negative counts from the end."""
        numbers = self.experiment_numbers
        if number < 0:
            if -number > len(numbers):
                return ()
            number = numbers[number]
        return tuple(
            record
            for folder, info in self._scan()
            if info["experiment_number"] == number
            for record in self._root(folder, info).all_records
        )

    def reload(self) -> None:
        """Forget cached trees and queries; the next read sees the folder as it is now."""
        self._trees.clear()
        self._query_cache = None

    # -- queries -------------------------------------------------------------------------

    def sql(self, query: str) -> duckdb.DuckDBPyRelation:
        """Run DuckDB SQL over the views ``records`` (one row per record, lineage as columns)
        and ``experiments`` (one row per run).

        >>> collection.sql("SELECT model, avg(loss) FROM records GROUP BY model").df()  # doctest: +SKIP
        """
        from .query import Query

        self.flush()
        runs = self._scan()
        if self._query_cache is None or not self._query_cache.is_current(runs):
            self._query_cache = Query(runs, self._database)
        return self._query_cache.sql(query)

    def to_arrow(self) -> pa.Table:
        """The flat table of every record as a pyarrow Table."""
        return self.sql("SELECT * FROM records").to_arrow_table()

    def to_pandas(self) -> pandas.DataFrame:
        """The flat table of every record as a pandas DataFrame."""
        return self.sql("SELECT * FROM records").df()

    def to_polars(self) -> polars.DataFrame:
        """The flat table of every record as a polars DataFrame."""
        return self.sql("SELECT * FROM records").pl()

    def to_spark(self, spark: pyspark.sql.SparkSession) -> pyspark.sql.DataFrame:
        """The flat table as a Spark DataFrame; Spark reads the runs' Parquet files itself."""
        from .query import spark_records

        self.flush()
        return spark_records(spark, self._scan())

    def __repr__(self) -> str:
        return f"ExperimentCollection({str(self.path)!r})"


def _next_number(infos: list[dict[str, Any]]) -> tuple[int, int]:
    """The seed's rule: a failed or crashed latest run gives its number again, else the next."""
    if not infos:
        return 1, 1
    top = max(info["experiment_number"] for info in infos)
    latest = max((info for info in infos if info["experiment_number"] == top),
                 key=lambda info: info["experiment_start_time"])
    if latest["status"] in (ERROR, CRASHED):
        return top, latest["error_number"] + 1
    return top + 1, 1


def _this_process() -> dict[str, Any]:
    return {"pid": os.getpid(), "pid_start": _process_start(os.getpid()), "host": socket.gethostname()}


def _process_start(pid: int) -> str | None:
    """The start time of a process as the kernel counts it (tells a reused pid apart)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return None if fields[0] == "Z" else fields[19]


def _alive(info: dict[str, Any]) -> bool:
    """Whether the process that runs ``info``'s run still lives (runs on other hosts: assumed)."""
    if info.get("host") != socket.gethostname():
        return True
    try:
        os.kill(info["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    start = _process_start(info["pid"])
    if info.get("pid_start") is None:
        return start is not None or not Path("/proc").is_dir()
    return start == info["pid_start"]


def _row_counts(folder: RunFolder, info: dict[str, Any], earlier: dict[int, Any]) -> dict[int, int]:
    """Rows per recorder of a stopped run: from the Parquet footer, else by reading the batches."""
    path = folder.compacted_path(info)
    if path is not None and not folder.segment_paths():
        return {entry["id"]: entry["rows"] for entry in read_tree_metadata(path)["recorders"]}
    return {node_id: sum(batch.num_rows for batch in batches()) for node_id, batches in earlier.items()}


def _cached(batches):  # noqa: ANN001, ANN202
    """Read a resumed recorder's earlier batches once, on first use."""
    loaded: list = []

    def read():  # noqa: ANN202
        if not loaded:
            loaded.append(list(batches()))
        return loaded[0]

    return read
