"""Experiment: one run of a collection, and the lifecycle that finishes it whatever happens.

An experiment is finished by ``finish()``, by the end of its ``with`` block, or else when
its process ends, so that no exit loses a run:

* the script ends normally: ``ok``, with every committed record;
* an uncaught exception ends it: ``error``, with that exception's text;
* SIGTERM (when nothing else handles it) or Ctrl-C: records flushed, ``error`` naming the signal;
* kill -9 or a power cut: nothing runs; the next open of the collection finds the run's
  lock let go by its dead writer (or, from another host, its heartbeat stopped) and marks it
  ``crashed``, keeping every record flushed (at most ``flush_interval``, 1 s by default, of
  records is lost).

The integrations (Lightning, Keras) use this same lifecycle; they keep no exit machinery
of their own.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from .store.layout import ERROR, OK, RUNNING, bookkeeping

if TYPE_CHECKING:
    from types import FrameType, TracebackType

    from .collection import ExperimentCollection
    from .recorder import Recorder
    from .store.run_folder import RunFolder
    from .store.run_store import RunStore


class Terminated(SystemExit):
    """Raised in the main thread when the process receives SIGTERM, so that it unwinds and exits."""

    def __init__(self, signal_name: str, code: int) -> None:
        super().__init__(code)
        self.signal_name = signal_name

    def __str__(self) -> str:
        return f"the process received {self.signal_name}"


class Experiment:
    """One run of a collection: its recorder, and :meth:`finish`; also a context manager.

    ``with collection.new_experiment() as recorder:`` yields :attr:`recorder` and finishes the
    run at the end of the block, marking it failed (and re-raising) if an exception escapes.

    >>> import tempfile
    >>> from rigorous_recorder import ExperimentCollection
    >>> collection = ExperimentCollection(tempfile.mkdtemp() + "/study", quiet=True)
    >>> experiment = collection.new_experiment(lr=0.1)
    >>> experiment.recorder.push(loss=0.5)
    Recorder(lr=0.1, records=1, children=0)
    >>> experiment.number, experiment.status
    (1, 'running')
    >>> experiment.finish()
    >>> experiment.status, collection.records[0]["loss"], collection.records[0]["had_error"]
    ('ok', 0.5, False)
    """

    def __init__(self, collection: ExperimentCollection, folder: RunFolder, info: dict[str, Any],
                 root: Recorder, store: RunStore) -> None:
        self.collection = collection
        self.folder = folder
        self.info = info
        #: The run's root recorder: it holds the bookkeeping keys every record sees.
        self.root = root
        #: The experiment's recorder: the experiment info, and the parent of your recorders.
        self.recorder = root.children[0]
        self._store = store
        self._pid = os.getpid()
        self._finishing = threading.RLock()
        _running.register(self)

    @property
    def id(self) -> str:
        """The run's id (its folder name); give it to ``collection.resume()`` to reopen it."""
        return self.folder.id

    @property
    def number(self) -> int:
        """The experiment number."""
        return self.info["experiment_number"]

    @property
    def status(self) -> str:
        """``running`` until finished, then ``ok`` or ``error``."""
        return self.info["status"]

    @property
    def finished(self) -> bool:
        """True once :meth:`finish` has run."""
        return self.info["status"] != RUNNING

    def flush(self) -> None:
        """Write everything recorded so far to disk, safe from a kill -9."""
        if not self.finished:
            self._store.flush()

    def finish(self, error: BaseException | str | None = None) -> None:
        """End the run: record times and outcome, and write its records as one Parquet file.

        ``error`` (an exception or a text) marks the run failed. Raises
        :class:`~rigorous_recorder.errors.StorageError` if the records cannot all be written;
        the run then stays running (and is recovered as crashed if never finished).
        """
        with self._finishing:
            if self.finished:
                return
            self._store.close()
            end = time.time()
            failed = error is not None
            info = {
                **self.info,
                "status": ERROR if failed else OK,
                "had_error": failed,
                "error_number": self.info["error_number"] if failed else 0,
                "experiment_end_time": end,
                "experiment_duration": end - self.info["experiment_start_time"],
                "error": describe(error) if failed else None,
                "experiment": dict(self.recorder.local_data),
            }
            self.info = self.collection.finished(self, info)
            self._store.serve_from(self.folder.compacted_nodes(self.info))
            self.root.update(bookkeeping(self.info))
            _running.unregister(self)
        if not self.collection.quiet:
            outcome = f"failed ({self.info['error']})" if failed else "saved"
            print(f"rigorous_recorder: experiment {self.number} {outcome}: "
                  f"{self.info['records_count']:,} records in {self.folder.path}", file=sys.stderr)

    def __enter__(self) -> Recorder:
        return self.recorder

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.finish(error)

    def __repr__(self) -> str:
        return f"Experiment(number={self.number}, id={self.id!r}, status={self.status!r})"


def describe(error: BaseException | str) -> str:
    """The text a failed run keeps of what ended it."""
    if isinstance(error, str):
        return error
    if isinstance(error, Terminated):
        return str(error)
    text = str(error)
    if isinstance(error, KeyboardInterrupt) and not text:
        text = "interrupted (Ctrl-C, SIGINT)"
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class _Running:
    """The experiments of this process that are not finished, and the hooks that finish them."""

    def __init__(self) -> None:
        self._experiments: dict[int, Experiment] = {}
        self._lock = threading.Lock()
        self._installed = False
        self.ending: BaseException | str | None = None  # why the process ends, once known
        os.register_at_fork(after_in_child=self._forget)

    def register(self, experiment: Experiment) -> None:
        with self._lock:
            self._experiments[id(experiment)] = experiment
            if not self._installed:
                self._install()

    def unregister(self, experiment: Experiment) -> None:
        with self._lock:
            self._experiments.pop(id(experiment), None)

    def of_folder(self, path: os.PathLike[str]) -> Experiment | None:
        """The running experiment of this process that writes the run folder ``path``."""
        with self._lock:
            return next((each for each in self._experiments.values() if each.folder.path == path), None)

    def in_collection(self, path: os.PathLike[str]) -> list[Experiment]:
        """The running experiments of this process in the collection at ``path``."""
        with self._lock:
            return [each for each in self._experiments.values() if each.collection.path == path]

    def finish_all(self, error: BaseException | str | None) -> None:
        """Finish every experiment of this process (at exit, on an uncaught exception or a signal)."""
        with self._lock:
            experiments = [each for each in self._experiments.values() if each._pid == os.getpid()]
        for experiment in experiments:
            try:
                experiment.finish(error)
            except Exception as failure:  # noqa: BLE001 - at exit: report, and finish the others
                print(f"rigorous_recorder: could not finish experiment {experiment.number} ({experiment.id}): "
                      f"{failure}; it will be recovered as crashed", file=sys.stderr)

    def _install(self) -> None:
        self._installed = True
        # Finishing at exit may convert values with pyarrow, which imports pandas on first use,
        # which imports concurrent.futures.thread, which cannot be imported once the
        # interpreter is exiting: import that one now.
        import concurrent.futures.thread  # noqa: F401

        atexit.register(self._at_exit)
        previous = sys.excepthook

        def excepthook(kind: type[BaseException], error: BaseException, trace: TracebackType | None) -> None:
            self.ending = error
            self.finish_all(error)
            previous(kind, error, trace)

        sys.excepthook = excepthook
        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, number: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process at once
        self.ending = Terminated("SIGTERM", 128 + number)
        raise self.ending  # unwinds the main thread; what is not finished on the way is at exit

    def _at_exit(self) -> None:
        self.finish_all(self.ending)

    def _forget(self) -> None:
        """In a forked child: the parent's experiments are not this process's to finish. They
        stay referenced, never freed: freeing one would close its collection's DuckDB database,
        whose cleanup waits on threads a forked child does not have (pyspark's JVM launch and
        DataLoader workers fork)."""
        self._left_by_parent = self._experiments
        self._experiments = {}
        self._lock = threading.Lock()


_running = _Running()


def running_experiment(folder_path: os.PathLike[str]) -> Experiment | None:
    """The experiment of this process that is recording into the run folder ``folder_path``."""
    return _running.of_folder(folder_path)


def running_in(collection_path: os.PathLike[str]) -> list[Experiment]:
    """The experiments of this process recording into the collection at ``collection_path``."""
    return _running.in_collection(collection_path)


def why_process_ends() -> BaseException | str | None:
    """Why this process ends, once known: the uncaught exception or the signal (SIGTERM) ending it."""
    return _running.ending
