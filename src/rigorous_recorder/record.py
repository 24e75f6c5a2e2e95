"""Record: one committed row, seen through its recorder's lineage.

A record stores only its own values. Reading a key looks at the record's own value, then
its recorder's local data, then each ancestor's (nearest wins); a key found nowhere reads
as ``None``. Parent data is shared, never copied, so a value set on a parent after the
commit is visible in every earlier record.

A ``None`` value of the record's own counts as "not set here": it does not hide a parent's
value of the same key.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Iterator, Mapping, Sequence
from itertools import chain, repeat
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from .recorder import Recorder

Columns = Mapping[str, Sequence[Any]]


class Record(Mapping[str, Any]):
    """A read-only, dict-like view of one record and its ancestors' data.

    >>> from rigorous_recorder import Recorder
    >>> record = Recorder(model="m").push(loss=0.5)[0]
    >>> record["loss"], record["model"], record["missing"]
    (0.5, 'm', None)
    >>> record
    {'loss': 0.5, 'model': 'm'}
    """

    __slots__ = ("_columns", "_index", "_recorder")

    def __init__(self, columns: Columns, index: int, recorder: Recorder) -> None:
        self._columns = columns
        self._index = index
        self._recorder = recorder

    @property
    def recorder(self) -> Recorder:
        """The recorder that committed this record."""
        return self._recorder

    def own_data(self) -> dict[str, Any]:
        """The values committed in this record itself, without inherited data."""
        index = self._index
        own = {}
        for key, column in self._columns.items():
            if index < len(column):  # a recorder's newest columns may be short (see Recorder)
                value = column[index]
                if value is not None:
                    own[key] = value
        return own

    def __getitem__(self, key: str) -> Any:
        column = self._columns.get(key)
        if column is not None:
            try:
                value = column[self._index]
            except IndexError:  # a short newest column: this record has no value for the key
                value = None
            if value is not None:
                return value
        for data in self._recorder._lineage:
            if key in data:
                return data[key]
        return None

    def get(self, key: str, default: Any = None) -> Any:
        """The value of ``key``, or ``default`` when neither the record nor its lineage has it."""
        return self[key] if key in self else default

    def __contains__(self, key: object) -> bool:
        column = self._columns.get(key)  # type: ignore[call-overload]
        if column is not None and self._index < len(column) and column[self._index] is not None:
            return True
        return any(key in data for data in self._recorder._lineage)

    def __iter__(self) -> Iterator[str]:
        seen = set()
        for key in self.own_data():
            seen.add(key)
            yield key
        for data in self._recorder._lineage:
            for key in data:
                if key not in seen:
                    seen.add(key)
                    yield key

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __repr__(self) -> str:
        return repr(dict(self))


class RecordChunk:
    """Consecutive records of one recorder, whose values load on demand."""

    __slots__ = ("recorder", "rows", "_load")

    def __init__(self, recorder: Recorder, rows: int, load: Callable[[], Columns]) -> None:
        self.recorder = recorder
        self.rows = rows
        self._load = load

    def columns(self) -> Columns:
        """The chunk's values as Python lists, one per key."""
        return self._load()


class RecordSequence(Sequence[Record]):
    """An immutable, lazily loaded sequence of records (one recorder's, or a whole subtree's).

    Supports ``len``, iteration, indexing (negative too) and slicing. Values are read from
    compact storage chunk by chunk, so iterating millions of records holds one chunk at a time.

    >>> from rigorous_recorder import Recorder
    >>> records = Recorder(run=1).push(x=1).push(x=2).push(x=3).records
    >>> len(records), records[-1], [record["x"] for record in records[:2]]
    (3, {'x': 3, 'run': 1}, [1, 2])
    """

    __slots__ = ("_chunks", "_starts", "_cached")

    def __init__(self, chunks: Sequence[RecordChunk]) -> None:
        self._chunks = [chunk for chunk in chunks if chunk.rows]
        self._starts = []
        total = 0
        for chunk in self._chunks:
            self._starts.append(total)
            total += chunk.rows
        self._starts.append(total)
        self._cached: tuple[int, Columns] | None = None

    @classmethod
    def concat(cls, sequences: Iterable[RecordSequence]) -> RecordSequence:
        """One sequence of the records of several, in order."""
        return cls([chunk for sequence in sequences for chunk in sequence._chunks])

    def __len__(self) -> int:
        return self._starts[-1]

    def __iter__(self) -> Iterator[Record]:
        return chain.from_iterable(map(Record, repeat(chunk.columns(), chunk.rows), range(chunk.rows),
                                       repeat(chunk.recorder, chunk.rows)) for chunk in self._chunks)

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        length = len(self)
        if index < 0:
            index += length
        if not 0 <= index < length:
            raise IndexError(f"record index {index} out of range for {length} records")
        position = bisect_right(self._starts, index) - 1
        if self._cached is None or self._cached[0] != position:
            self._cached = (position, self._chunks[position].columns())
        chunk = self._chunks[position]
        return Record(self._cached[1], index - self._starts[position], chunk.recorder)

    def __repr__(self) -> str:
        return f"<{len(self)} records>"
