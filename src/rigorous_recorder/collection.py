"""ExperimentCollection: numbered experiments stored on disk, crash-safe, queryable.

``ExperimentCollection("data/my_study")`` stores in ``data/my_study.collection``. Each
``new_experiment()`` is one run in its own folder (see ``store``). Numbering follows the
seed: after a successful run the next number; after a failed or crashed run the same
number again, ``error_number`` counting the consecutive failures. Every record of a run
sees six bookkeeping keys through the run's root recorder: experiment_number,
error_number, had_error, experiment_start_time, experiment_end_time, experiment_duration.
"""

from __future__ import annotations

import collections
import functools
import json
import os
import sys
import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any


from ._files import atomic_write_text
from ._gc import paused
from ._values import normalize_mapping
from .context import capture
from .errors import CollectionError, DamagedFileError, StorageError
from .experiment import Experiment, running_experiment, running_in
from .record import RecordSequence
from .recorder import Recorder, build_tree
from .store.layout import (
    ACTIVE_FOLDER,
    CATALOG_FOLDER,
    COLLECTION_FILE,
    CRASHED,
    DAMAGED,
    FAILED,
    FORMAT_VERSION,
    NUMBERING_LOCK,
    RECOVERED_SESSION,
    RUNNING,
    RUNS_FOLDER,
    SUFFIX,
    bookkeeping,
    number_of_run_name,
    run_name,
)
from .store.process import HEARTBEAT_TIMEOUT, run_alive, this_process
from .store.run_folder import RunFolder, Signature, info_signature_at

if TYPE_CHECKING:
    import duckdb
    import pandas
    import polars
    import pyarrow as pa
    import pyspark.sql
    from filelock import FileLock

    from .query import Query
    from .store.catalog import Catalog, PackedRun

Run = tuple[RunFolder, dict[str, Any]]


class ExperimentCollection:
    """Every run of a study, on disk in ``path + ".collection"``.

    Args:
        path: where to store; ``extension`` is appended unless already there.
        quiet: print nothing.
        records: 1.x's argument; only None is accepted.
        extension: the folder's suffix, ``.collection`` by default.
        flush_interval: seconds between automatic flushes while an experiment runs.
        create: make the collection if it does not exist (else raise CollectionError).
        recover: keep the collection in order: finish the runs whose process died now (else
            :meth:`recover` does it) and gather finished runs into the catalog when queried.
            False never writes to the collection unless you record (the dashboard reads so).
        record_context: record with each new experiment where it ran (git commit, command
            line, host, Python and package versions; see ``context``).
        heartbeat_timeout: seconds without a heartbeat after which a run of another host
            counts as crashed, unless its writer's lock is seen held (runs of this host are
            checked by their lock, or their process, at once).

    >>> import tempfile
    >>> collection = ExperimentCollection(tempfile.mkdtemp() + "/study", quiet=True)
    >>> with collection.new_experiment(lr=0.1) as recorder:
    ...     model = recorder.sub_recorder(model="mlp").push(step=0, loss=0.5).push(step=1, loss=0.25)
    >>> collection.sql("SELECT lr, model, avg(loss) FROM records GROUP BY ALL").fetchall()
    [(0.1, 'mlp', 0.375)]
    >>> [(run["experiment_number"], run["status"]) for run in collection.runs]
    [(1, 'ok')]
    """

    def __init__(self, path: str | os.PathLike[str], quiet: bool = False, records: None = None,
                 extension: str = SUFFIX, *, flush_interval: float = 1.0,
                 create: bool = True, recover: bool = True, record_context: bool = True,
                 heartbeat_timeout: float = HEARTBEAT_TIMEOUT) -> None:
        if records is not None:
            raise CollectionError("records= (1.x's records to add at the next save) has no 2.x meaning: "
                                  "record them in an experiment instead")
        text = os.fspath(path).rstrip("/\\") or os.fspath(path)
        self.path = Path(text if text.endswith(extension) else text + extension).absolute()
        self.quiet = quiet
        self.flush_interval = flush_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.record_context = record_context
        self._runs_path = self.path / RUNS_FOLDER
        self._trees: dict[tuple[str, str], Recorder] = {}
        self._damaged: dict[str, str] = {}  # runs whose files turned out unreadable when read
        self._query_cache: Any = None
        self._queries: list[Any] = []  # the latest views, kept open a while after the collection goes
        self._catalog: Catalog | None = None  # made when a catalog is there or packing starts
        self._maintain = recover
        if not (self.path / COLLECTION_FILE).is_file():
            if not create:
                raise CollectionError(f"{str(self.path)!r} is not a rigorous_recorder collection")
            self._create()
        _check_format(self.path / COLLECTION_FILE)
        self._database: duckdb.DuckDBPyConnection | None = None  # started at the first query
        if recover and _some_run_active(self.path):
            try:
                with self._numbering.acquire(timeout=10):
                    self._recover_active()
            except (OSError, TimeoutError):  # filelock's Timeout is a TimeoutError
                pass  # a read-only or full disk, or a busy lock: reading works; recovery waits

    @functools.cached_property
    def _numbering(self) -> FileLock:
        """The lock that numbering and recovery take (filelock loads with it: a seventh of a second)."""
        from filelock import FileLock

        return FileLock(self.path / NUMBERING_LOCK)

    def _create(self) -> None:
        if self.path.exists() and not self.path.is_dir():
            raise CollectionError(f"{str(self.path)!r} exists and is not a folder")
        self._runs_path.mkdir(parents=True, exist_ok=True)
        with self._numbering:
            if not (self.path / COLLECTION_FILE).is_file():
                import uuid  # here: opening a collection that exists never needs it

                atomic_write_text(self.path / COLLECTION_FILE, json.dumps(
                    {"format": FORMAT_VERSION, "id": uuid.uuid4().hex, "created": time.time()}))
                if not self.quiet:
                    print(f"rigorous_recorder: new collection {self.path}", file=sys.stderr)

    # -- running experiments -------------------------------------------------------------

    def new_experiment(self, experiment_info: dict[str, Any] | None = None, **kwargs: Any) -> Experiment:
        """Start a run now; use it as ``with collection.new_experiment(**info) as recorder:``."""
        from .store.run_store import RunStore  # loads pyarrow, before the run's clock starts

        data = normalize_mapping(experiment_info, kwargs)
        context = capture() if self.record_context else {}
        with self._numbering:
            number, error_number = self._next_number()
            run_id = run_name(number, os.urandom(5).hex())
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
                "experiment": data,
                "context": context,
                **this_process(),
            }
            folder = self._create_run(info)
        root = Recorder(bookkeeping(info))
        Recorder(data).set_parent(root)
        store = RunStore(folder, info["session"], self.flush_interval)
        store.take(root)
        return self._started(Experiment(self, folder, info, root, store))

    def _create_run(self, info: dict[str, Any]) -> RunFolder:
        """Make the run's folder whole before it appears: readers never see half a run."""
        (self.path / ACTIVE_FOLDER).mkdir(exist_ok=True)
        (self.path / ACTIVE_FOLDER / info["id"]).touch()
        building = RunFolder(self._building(info["id"]))
        building.path.mkdir()
        building.write_info(info)
        building.touch_heartbeat()
        os.rename(building.path, self._runs_path / info["id"])
        return RunFolder(self._runs_path / info["id"])

    def _building(self, run_id: str) -> Path:
        """Where the folder of run ``run_id`` is made, before it is renamed into place (a name no
        reader lists); what a process killed meanwhile left there is removed by recovery."""
        return self._runs_path / f".new-{run_id}"

    def resume(self, run_id: str) -> Experiment:
        """Reopen a finished or crashed run to record more: same number, same recorders."""
        with self._numbering:
            folder, info = self._find(run_id)
            if info["status"] == RUNNING and self._alive(folder, info):
                raise CollectionError(f"run {run_id!r} is still running (pid {info.get('pid')} on {info.get('host')})")
            if info["status"] == RUNNING:
                info = self._recover(folder, info)
            nodes = folder.nodes(info)
            info = {**info, "status": RUNNING, "had_error": True, "experiment_end_time": None,
                    "experiment_duration": None, "session": info["session"] + 1, **this_process()}
            (self.path / ACTIVE_FOLDER).mkdir(exist_ok=True)
            (self.path / ACTIVE_FOLDER / run_id).touch()
            folder.write_info(info)
            folder.touch_heartbeat()
        from .store.run_store import RunStore
        from .store.tree_file import TreeNode

        recorders = build_tree([TreeNode(node.id, node.parent, node.local_data) for node in nodes])
        root = next(recorder for recorder in recorders.values() if recorder.parent is None)
        store = RunStore(folder, info["session"], self.flush_interval, resumed=recorders,
                         earlier={node.id: node for node in nodes})
        store.take(root)
        root.update(bookkeeping(info))
        return self._started(Experiment(self, folder, info, root, store))

    def flush(self) -> None:
        """Write everything this process's running experiments recorded so far, safe from a kill -9."""
        for experiment in running_in(self.path):
            experiment.flush()

    def recover(self) -> list[str]:
        """Finish runs whose process died: keep their flushed records, mark them crashed.

        Takes the same lock as every other recovery and as numbering. Returns the ids of the
        runs it finished.
        """
        with self._numbering:
            return self._recover_active()

    def _recover_active(self) -> list[str]:
        """Recover the dead runs among those marked active (call with the numbering lock)."""
        recovered = []
        active = self.path / ACTIVE_FOLDER
        for marker in sorted(active.iterdir()) if active.is_dir() else []:
            folder = RunFolder(self._runs_path / marker.name)
            try:
                info = folder.read_info()
            except DamagedFileError:
                if not folder.path.exists():  # a run that never came to be: killed while its folder was made
                    import shutil  # here: readers never delete

                    shutil.rmtree(self._building(marker.name), ignore_errors=True)
                    marker.unlink(missing_ok=True)
                continue
            if info["status"] != RUNNING:
                marker.unlink(missing_ok=True)
            elif not self._alive(folder, info):
                try:
                    self._recover(folder, info)
                except (OSError, StorageError, DamagedFileError) as error:
                    if not self.quiet:
                        print(f"rigorous_recorder: cannot recover run {folder.id} now: {error}", file=sys.stderr)
                    continue
                recovered.append(folder.id)
        return recovered

    def _recover(self, folder: RunFolder, info: dict[str, Any]) -> dict[str, Any]:
        """Mark a dead run crashed, keeping every record on disk (call with the numbering lock).

        ``info`` was read before its process was found gone: run.json is read again, since the
        process may have finished the run in between (it can change nothing now). Before its
        journals are read, run.json claims the session: a process found gone by its heartbeat
        alone (another host's, stalled) may still be writing, and learns at its next write that
        the run was taken over, so nothing it counts as written goes to a journal this recovery
        has read and is about to delete.
        """
        info = folder.read_info()
        if info["status"] != RUNNING:
            (self.path / ACTIVE_FOLDER / folder.id).unlink(missing_ok=True)
            return info
        end = max((path.stat().st_mtime for path in folder.path.rglob("*") if path.is_file()), default=time.time())
        info = {**info, RECOVERED_SESSION: info["session"]}
        folder.write_info(info)
        info = folder.compact({
            **info, "status": CRASHED, "had_error": True, "experiment_end_time": end,
            "experiment_duration": end - info["experiment_start_time"],
            "error": f"the process (pid {info.get('pid')} on {info.get('host')}) ended without finishing the run",
        })
        (self.path / ACTIVE_FOLDER / folder.id).unlink(missing_ok=True)
        if not self.quiet:
            print(f"rigorous_recorder: experiment {info['experiment_number']} ({folder.id}) crashed; "
                  f"its {info['records_count']:,} flushed records are kept", file=sys.stderr)
        return info

    def finished(self, experiment: Experiment, info: dict[str, Any]) -> dict[str, Any]:
        """Store the end of ``experiment`` (called by ``Experiment.finish``); returns its final info.
        Raises StorageError naming the run when its records file or run.json cannot be written
        (a full disk): its records stay in its journal, and its run.json says running."""
        try:
            info = experiment.folder.compact(info)
        except OSError as error:
            raise StorageError(
                f"cannot finish experiment run {experiment.id}: writing its records file in {experiment.folder.path} "
                f"failed ({error}); its records stay in its journal: finish() again once writing works, or the run "
                "is recovered as crashed with them") from error
        (self.path / ACTIVE_FOLDER / experiment.id).unlink(missing_ok=True)
        if info.get("records") is not None and self._maintain:
            from .store.verified import verified_files

            verified_files(self.path).written(experiment.folder.compacted_path(info))  # readers need not read it back
        self._query_cache = None
        try:
            self._pack()
        except Exception as error:  # noqa: BLE001 - the run is stored; a cache must never fail its finish
            if not self.quiet:
                print(f"rigorous_recorder: could not pack finished runs into the catalog: {error!r}", file=sys.stderr)
        return info

    def _started(self, experiment: Experiment) -> Experiment:
        experiment.flush()
        self._query_cache = None
        if not self.quiet:
            print(f"rigorous_recorder: experiment {experiment.number} started ({experiment.id})", file=sys.stderr)
        return experiment

    def _next_number(self) -> tuple[int, int]:
        """The seed's rule: a failed or crashed latest run gives its number again, else the next.

        Reads only the runs of the highest number (their folder names carry it); a damaged
        one is never reused.
        """
        top, attempts = None, []
        highest = (0, "")  # a name's digits before its "-" (count, text): a run's number, zero-padded
        for name in os.listdir(self._runs_path):
            digits = name.find("-")
            if (digits, name[:digits]) < highest:
                continue  # a lower number, or no run's name: no need to read it
            number = number_of_run_name(name)
            if number is None:
                continue  # a stray file, or a run being created
            if number != top:
                top, attempts, highest = number, [], (digits, name[:digits])
            attempts.append(name)
        if top is None:
            return 1, 1
        latest: dict[str, Any] | None = None
        for name in attempts:
            folder = RunFolder(self._runs_path / name)
            try:
                info = folder.read_info()
            except DamagedFileError:
                return top + 1, 1
            if info["status"] == RUNNING and not self._alive(folder, info):
                info = self._recover(folder, info)
            if latest is None or info["experiment_start_time"] > latest["experiment_start_time"]:
                latest = info
        assert latest is not None
        if latest["status"] in FAILED:
            return top, latest["error_number"] + 1
        return top + 1, 1

    def _alive(self, folder: RunFolder, info: dict[str, Any]) -> bool:
        return run_alive(info, folder.lock_held(info["session"]), folder.heartbeat_age, self.heartbeat_timeout)

    # -- reading -------------------------------------------------------------------------

    def _scan(self) -> list[Run]:
        """Every run, oldest first, with its info as a reader sees it now.

        A running run whose process is gone reads as crashed (nothing is written: recovery
        does that); a run whose run.json cannot be read reads as damaged, with the reason.
        """
        return self._scan_packed()[0]

    def _scan_packed(self, signatures: dict[str, Signature | None] | None = None, queryable: bool = False,
                     pages: bool = True) -> tuple[list[Run], dict[str, PackedRun]]:
        """:meth:`_scan`, and the runs among them read from the catalog's packs, by id
        (``signatures``: of each run.json, taken just before, by run name; ``queryable``: only
        from packs whose records and trees are whole, as a query needs them). A stopped run
        read in place whose records file fails its page checksums reads as damaged (``pages``
        False: not checked, for the packer, which checks every page it packs)."""
        from .store.verified import check_pages, verified_files

        packs = self._catalog_runs(queryable)
        runs = []
        packed = {}
        try:
            entries = list(os.scandir(self._runs_path))
        except FileNotFoundError:
            entries = []
        for entry in entries:
            number = number_of_run_name(entry.name)
            if number is None or not entry.is_dir():
                continue  # a stray file or folder, or a run being created
            folder = RunFolder(entry.path)
            packed_run = packs.get(folder.id)
            if packed_run is not None and folder.id not in self._damaged and packed_run.signature == (
                    signatures[entry.name] if signatures and entry.name in signatures else folder.info_signature()):
                runs.append((folder, packed_run.info))
                packed[folder.id] = packed_run
                continue
            info = None
            try:
                info = folder.read_info()
                if folder.id in self._damaged:
                    raise DamagedFileError(folder.path, self._damaged[folder.id])
                if pages:
                    info = folder.read_while_changing(info, check_pages)[0]
            except DamagedFileError as error:
                info = _damaged(folder, number, error, info)
            else:
                if info["status"] == RUNNING and running_experiment(folder.path) is None \
                        and not self._alive(folder, info):
                    info = self._found_dead(folder, info)
            runs.append((folder, info))
        runs.sort(key=lambda run: (run[1]["experiment_number"], run[1].get("experiment_start_time") or 0, run[0].id))
        if self._maintain:
            verified_files(self.path).save()
        return runs, packed

    def _found_dead(self, folder: RunFolder, info: dict[str, Any]) -> dict[str, Any]:
        """A run found running whose process is gone: recovered now, when this collection
        recovers and the numbering lock is free (its active/ marker put back if it was lost),
        else shown as crashed."""
        if self._maintain:
            try:
                (self.path / ACTIVE_FOLDER / folder.id).touch()
                with self._numbering.acquire(timeout=0):
                    self._recover_active()
                info = folder.read_info()
            except (OSError, TimeoutError, DamagedFileError):
                pass  # a read-only disk or a busy lock: the next reader recovers it
        if info["status"] == RUNNING:
            info = {**info, "status": CRASHED, "error": "the process ended without finishing the run (not yet recovered)"}
        return info

    def _catalog_runs(self, queryable: bool = False) -> dict[str, PackedRun]:
        """The runs the catalog's packs hold (nothing is imported while there is no catalog)."""
        if self._catalog is None:
            if not (self.path / CATALOG_FOLDER).is_dir():
                return {}
            from .store.catalog import Catalog

            self._catalog = Catalog(self.path)
        return self._catalog.runs(queryable)

    def _pack(self) -> bool:
        """Gather finished runs that no pack holds into packs, once enough of them wait.

        Returns True when it packed some. Costs a directory listing and the packs' listings
        while too few wait (then deletes what a packer killed midway left, if any). The runs of
        a pack found damaged count as packed there: they are read in place, and packed again
        once enough other runs wait; checking every pack's pages at each run's finish would
        cost seconds in every process of a large collection.
        """
        if not self._maintain:
            return False
        from .store.catalog import PACK_MIN_RUNS, Catalog

        if self._catalog is None:
            self._catalog = Catalog(self.path)
        try:
            if len(os.listdir(self._runs_path)) - len(self._catalog.runs()) < PACK_MIN_RUNS:
                self._catalog.tidy()
                return False
        except OSError:
            return False
        runs, packed = self._scan_packed(queryable=True, pages=False)
        if not self._catalog.pack(runs, packed):
            return False
        self._query_cache = None
        return True

    def _find(self, run_id: str) -> Run:
        for folder, info in self._scan():
            if folder.id == run_id:
                if info["status"] == DAMAGED:
                    raise CollectionError(f"run {run_id!r} is damaged: {info['error']}")
                return folder, info
        raise CollectionError(f"no run {run_id!r} in {str(self.path)!r}")

    @property
    def runs(self) -> list[dict[str, Any]]:
        """Each run's bookkeeping (run.json) as seen now, oldest first; damaged runs included."""
        with paused():
            runs, packed = self._scan_packed()
            return [packed[folder.id].full_info if folder.id in packed else info for folder, info in runs]

    def tree(self, run_id: str) -> Recorder:
        """The root recorder of a run: the live one for a run of this process, else read from disk.

        Its ``node_id`` is 0, the experiment recorder's 1; ``children`` lead to every recorder.
        """
        folder, info = self._find(run_id)
        root = self._root(folder, info)
        if root is None:
            raise CollectionError(f"run {run_id!r} cannot be read: {self._damaged.get(run_id, 'damaged')}")
        return root

    def records_count(self, run_id: str) -> int:
        """The number of records of a run: from its run.json once stopped, else counted on disk."""
        folder, info = self._find(run_id)
        live = running_experiment(folder.path)
        if live is not None:
            return len(live.root.all_records)
        return folder.read_while_changing(info, RunFolder.records_count)[1]

    def _root(self, folder: RunFolder, info: dict[str, Any]) -> Recorder | None:
        """The run's tree: the live one for a run of this process, else read from disk."""
        live = running_experiment(folder.path)
        if live is not None:
            return live.root
        if info["status"] == DAMAGED:
            return None
        key = (folder.id, info.get("records") if info["status"] not in (RUNNING, CRASHED) else None)
        tree = self._trees.get(key)
        if tree is None:
            try:
                recorders = build_tree(folder.read_while_changing(info, RunFolder.nodes)[1])
            except DamagedFileError as error:
                self._damaged[folder.id] = error.problem if error.path == folder.path else str(error)
                return None
            tree = next((recorder for recorder in recorders.values() if recorder.parent is None), None)
            if key[1] is not None and tree is not None:
                self._trees[key] = tree
        return tree

    def _records_of(self, runs: list[Run]) -> RecordSequence:
        roots = (self._root(folder, info) for folder, info in runs)
        return RecordSequence.concat(root.all_records for root in roots if root is not None)

    @property
    def records(self) -> RecordSequence:
        """Every record of every run, oldest run first; each acts like a dict."""
        return self._records_of(self._scan())

    def __len__(self) -> int:
        """The number of records of every run (a stopped run's count is in its run.json)."""
        total = 0
        for folder, info in self._scan():
            if info["status"] not in (RUNNING, CRASHED, DAMAGED) and "records_count" in info:
                total += info["records_count"]
            else:
                root = self._root(folder, info)
                total += len(root.all_records) if root is not None else 0
        return total

    @property
    def experiment_numbers(self) -> tuple[int, ...]:
        """The experiment numbers in the collection, ascending."""
        return tuple(sorted({info["experiment_number"] for _, info in self._scan()}))

    def __getitem__(self, number: int) -> tuple[Any, ...]:
        """The records of experiment ``number`` (every run of it); negative counts from the end."""
        runs = self._scan()
        numbers = sorted({info["experiment_number"] for _, info in runs})
        if number < 0:
            if -number > len(numbers):
                return ()
            number = numbers[number]
        return tuple(self._records_of([run for run in runs if run[1]["experiment_number"] == number]))

    def reload(self) -> None:
        """Forget cached trees and queries; the next read sees the folder as it is now."""
        self._trees.clear()
        self._damaged.clear()
        self._query_cache = None

    # -- queries -------------------------------------------------------------------------

    def sql(self, query: str) -> duckdb.DuckDBPyRelation:
        """Run DuckDB SQL over the views ``records`` (one row per record, lineage as columns)
        and ``experiments`` (one row per run).

        >>> collection.sql("SELECT model, avg(loss) FROM records GROUP BY model").df()  # doctest: +SKIP
        """
        return self._current_query(keep_in_memory=True).sql(query)

    def execute(self, query: str) -> duckdb.DuckDBPyConnection:
        """Run ``query`` as :meth:`sql` does, at once, and return DuckDB's result, whose
        ``fetchmany(n)`` streams the rows a batch at a time (a relation fetches them all at
        once); read it before this collection's next query, which replaces it. It never copies
        the records into memory, as a repeated :meth:`sql` on an unchanged collection does.

        >>> result = collection.execute("SELECT * FROM records")  # doctest: +SKIP
        >>> while rows := result.fetchmany(10_000): ...  # doctest: +SKIP
        """
        return self._current_query(keep_in_memory=False).execute(query)

    def _current_query(self, keep_in_memory: bool) -> Query:
        """The views over the collection as it is now: built again when a run changed, else
        (``keep_in_memory``) asked again, so read from memory from now on."""
        from .query import Query

        if self._database is None:
            import duckdb

            self._database = duckdb.connect()
            # DuckDB before 2.0 closes a cursor when it is collected, breaking the relations made
            # from it: `ExperimentCollection(path).sql(query).df()` would fail. The views of the
            # last few collections that were let go stay open a while.
            weakref.finalize(self, _let_go.append, self._queries)
        try:
            self.flush()
        except StorageError:
            pass  # a full disk: the query reads what is on disk; recording reports the failure
        signatures = _run_signatures(self.path)
        listing = None if signatures is None else (tuple(self._damaged), signatures)
        if self._query_cache is not None and self._query_cache.is_current(listing):
            if keep_in_memory:
                self._query_cache.keep_in_memory()
        else:
            with paused():
                self._pack()
                runs, packed = self._scan_packed(signatures, queryable=True)
                self._query_cache = Query(runs, self._database, packed, listing)
            self._queries[:] = [self._query_cache]
        return self._query_cache

    def interrupt(self) -> None:
        """Stop the query this collection answers in another thread: its ``sql()`` or fetch raises
        DuckDB's InterruptException (the command line's Ctrl-C does this)."""
        if self._query_cache is not None:
            self._query_cache.connection.interrupt()

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
        from .spark import records_frame

        self.flush()
        return records_frame(spark, self._scan())

    def ui(self, host: str = "127.0.0.1", port: int = 0, open_browser: bool = False) -> Any:
        """Serve the dashboard of this collection in a background thread; returns its handle
        (``.url``, ``.stop()``; shown as a link in Jupyter). Needs ``rigorous-recorder[ui]``."""
        from .ui import serve

        return serve(self, host=host, port=port, open_browser=open_browser)

    def __bool__(self) -> bool:
        return True  # a collection is there even when empty; len() would count every record

    def __repr__(self) -> str:
        return f"ExperimentCollection({str(self.path)!r})"


#: The views of collections that were let go, kept open for their last relations.
_let_go: collections.deque[Any] = collections.deque(maxlen=8)


def _check_format(path: Path) -> None:
    """Raise CollectionError when the collection.json at ``path`` says a newer version wrote the
    collection (this one might misread it, or write what that one misreads); a damaged one is
    ignored, as the run folders are the truth."""
    try:
        written = json.loads(path.read_bytes()).get("format")
    except (OSError, ValueError, AttributeError):
        return
    if type(written) is int and written > FORMAT_VERSION:
        raise CollectionError(f"{str(path.parent)!r} was written by a newer rigorous-recorder (format {written}; this "
                              f"version reads format {FORMAT_VERSION} and before): upgrade rigorous-recorder to open it")


def _some_run_active(path: Path) -> bool:
    """True while a run of the collection at ``path`` is running or waits for recovery (its
    marker is in ``active/``), or when that cannot be read."""
    try:
        return bool(os.listdir(path / ACTIVE_FOLDER))
    except FileNotFoundError:
        return False
    except OSError:
        return True


def _run_signatures(path: Path) -> dict[str, Signature | None] | None:
    """What changes whenever a run of the collection at ``path`` changes: the run.json signature
    of each entry of ``runs/`` by name (None for an entry that holds none); None while some run
    is active.

    One stat per run at every query: a run.json can change with nothing else in the collection
    changing (rewritten by hand, or twice within one tick of the file system's clock).
    """
    if _some_run_active(path):
        return None
    runs = f"{path}{os.sep}{RUNS_FOLDER}{os.sep}"
    try:
        names = os.listdir(runs)
    except FileNotFoundError:
        return {}
    return {name: info_signature_at(runs + name) for name in names}


def _damaged(folder: RunFolder, number: int, error: DamagedFileError,
             info: dict[str, Any] | None = None) -> dict[str, Any]:
    """The info a reader shows for a damaged run: its run.json (``info``) when that could be
    read, with the status and the error naming the file."""
    if info is not None:
        return {**info, "status": DAMAGED, "error": str(error)}
    return {"id": folder.id, "experiment_number": number, "error_number": None, "had_error": True,
            "status": DAMAGED, "error": str(error), "experiment_start_time": None, "experiment_end_time": None,
            "experiment_duration": None}
