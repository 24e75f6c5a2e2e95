"""live_write_to: a YAML file that grows by one record per commit.

The file is valid YAML at every moment::

    parent_data:
      experiment: 1
    records:
    - {x: 1, y: 1}
    - {x: 2, y: 2}

Each record is written with one ``write`` call and flushed, so a reader (or a crash) sees
whole records only.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from .record import Record


class LiveWriter:
    """Appends records to one YAML file."""

    def __init__(self, path: str | Path, parent_data: dict[str, Any]) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("w", encoding="utf-8")
        header = _dump({"parent_data": parent_data}) + "records:\n"
        self._file.write(header)
        self._file.flush()

    def write(self, record: Record) -> None:
        """Append the record's own values as one list item."""
        self._file.write(_dump([record.own_data()]))
        self._file.flush()


def _dump(data: Any) -> str:
    return yaml.safe_dump(data, default_flow_style=None, sort_keys=False, allow_unicode=True, width=1 << 30)
