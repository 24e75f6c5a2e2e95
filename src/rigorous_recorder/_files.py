"""Small file helpers: every metadata write is write-to-temp-then-rename."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def temporary_path_beside(path: Path) -> Path:
    """A fresh, unused path in ``path``'s folder, for a write that is renamed into place."""
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    return Path(name)


def atomic_write_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that readers see the old or the new file, never a part."""
    temporary = temporary_path_beside(path)
    try:
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
