"""live_write_to: a YAML file that grows by one record per commit.

The file is valid YAML at every moment::

    parent_data:
      experiment: 1
    records:
    - {x: 1, y: 1}
    - {x: 2, y: 2}

Each record is written with one ``write`` call and flushed, so a reader (or a crash) sees
whole records only. The file is opened for each write and closed right after, so no handle
stays open between commits.
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
        self._path = Path(path).absolute()  # later writes must not follow a change of directory
        self._path.parent.mkdir(parents=True, exist_ok=True)
        header = _dump({"parent_data": parent_data}) + "records:\n"
        with self._path.open("w", encoding="utf-8") as file:
            file.write(header)

    def write(self, record: Record) -> None:
        """Append the record's own values as one list item."""
        text = _dump([record.own_data()])
        with self._path.open("a", encoding="utf-8") as file:
            file.write(text)


def _dump(data: Any) -> str:
    text = yaml.safe_dump(data, default_flow_style=None, sort_keys=False, allow_unicode=True, width=1 << 30)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: YAML's escapes keep it
            text = yaml.safe_dump(data, default_flow_style=None, sort_keys=False, width=1 << 30)
    return text
