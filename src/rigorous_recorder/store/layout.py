"""Names shared by every layer: statuses, node ids, bookkeeping keys, file names.

Each is defined here once; the store, the query layer, the CLI and the integrations import
them from this module.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

#: The folder suffix of a collection: ``ExperimentCollection("data/s")`` is ``data/s.collection``.
SUFFIX = ".collection"
#: The version of the on-disk format (collection.json and each run.json carry it).
FORMAT_VERSION = 2

#: Run statuses. ``running`` is written while a process records; ``crashed`` is written by
#: recovery, and shown by readers for a running run whose process is gone; ``damaged`` is
#: never written: readers show it for a run whose files cannot be read.
RUNNING, OK, ERROR, CRASHED, DAMAGED = "running", "ok", "error", "crashed", "damaged"
STATUSES = (RUNNING, OK, ERROR, CRASHED, DAMAGED)
FAILED = frozenset({ERROR, CRASHED})
#: The key of run.json by which a recovery claims a running run's session before it reads the
#: journal: from then on that session's process (stalled on another host) writes nothing.
RECOVERED_SESSION = "recovered_session"

#: The node id of a run's root recorder, which holds the bookkeeping keys, and of the
#: experiment recorder below it, which holds the experiment info.
RUN_NODE, EXPERIMENT_NODE = 0, 1

#: The keys every record of a collection sees through its run's root recorder.
BOOKKEEPING_KEYS = (
    "experiment_number",
    "error_number",
    "had_error",
    "experiment_start_time",
    "experiment_end_time",
    "experiment_duration",
)

#: The column of a records file that holds the id of the recorder that committed each row.
RECORDER_COLUMN = "__recorder__"
#: The bytes a Parquet file (whose footer is not encrypted) starts and ends with, and the size
#: of the smallest one: the magic, an empty footer's length (4 bytes), the magic.
PARQUET_MAGIC = b"PAR1"
SMALLEST_PARQUET = 2 * len(PARQUET_MAGIC) + 4

# -- file names --------------------------------------------------------------------------

COLLECTION_FILE = "collection.json"
NUMBERING_LOCK = "numbering.lock"
RUNS_FOLDER = "runs"
#: Empty marker files, one per run that may be running: recovery looks only here.
ACTIVE_FOLDER = "active"
RUN_FILE = "run.json"
HEARTBEAT_FILE = "heartbeat"
JOURNAL_FOLDER = "journal"
CATALOG_FOLDER = "catalog"
CATALOG_LOCK = "catalog.lock"

_RUN_NAME = re.compile(r"^(\d{6,})-[0-9a-f]{10}$")
_RECORDS_NAME = re.compile(r"^records-(\d+)\.parquet$")
_JOURNAL_NAME = re.compile(r"^(\d+)-(\d+)\.rrj$")
_LOCK_NAME = re.compile(r"^lock-(\d+)$")


def run_name(number: int, suffix: str) -> str:
    """The folder name of a run: its experiment number, then a random hex suffix."""
    return f"{number:06d}-{suffix}"


def number_of_run_name(name: str) -> int | None:
    """The experiment number a run folder's name carries, or None for a name that is no run's."""
    match = _RUN_NAME.match(name)
    return int(match.group(1)) if match else None


def records_name(generation: int) -> str:
    """The name of a run's compacted records file of a generation."""
    return f"records-{generation}.parquet"


def is_records_name(name: object) -> bool:
    """True for a plain file name that :func:`records_name` makes (never a path)."""
    return isinstance(name, str) and _RECORDS_NAME.match(name) is not None


def journal_name(session: int, part: int) -> str:
    """The name of a journal file: the session that wrote it, and its part number."""
    return f"{session}-{part}.rrj"


def journal_key(name: str) -> tuple[int, int] | None:
    """(session, part) of a journal file name, or None for any other name."""
    match = _JOURNAL_NAME.match(name)
    return (int(match.group(1)), int(match.group(2))) if match else None


def lock_name(session: int) -> str:
    """The name of the file whose ``flock`` the writer of a run's session holds while it records."""
    return f"lock-{session}"


def lock_session(name: str) -> int | None:
    """The session of a lock file name, or None for any other name."""
    match = _LOCK_NAME.match(name)
    return int(match.group(1)) if match else None


def bookkeeping(info: dict[str, Any]) -> dict[str, Any]:
    """The bookkeeping keys of a run, from its run.json, as :func:`bookkeeping_columns` shows them."""
    return {key: values[0] for key, values in bookkeeping_columns([info]).items()}


def bookkeeping_columns(infos: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
    """The bookkeeping keys of runs, from their run.json, a list of values per key.

    ``had_error`` reads None while a run is running (unknown yet); run.json keeps True then,
    so that a crash leaves it True, as in 1.x.
    """
    columns = {key: [info.get(key) for info in infos] for key in BOOKKEEPING_KEYS}
    columns["had_error"] = [None if info.get("status") == RUNNING else had_error
                            for info, had_error in zip(infos, columns["had_error"])]
    return columns
