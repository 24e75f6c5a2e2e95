"""Small file helpers: every metadata write is write-to-temp-then-rename."""

from __future__ import annotations

import os
from pathlib import Path

#: Fresh names tried before giving up (a clash needs the same 64 random bits twice).
_NAME_ATTEMPTS = 100
#: The mode a plain ``open()`` asks for; the kernel takes the umask off it.
_PLAIN_FILE_MODE = 0o666


def temporary_path_beside(path: Path) -> Path:
    """A fresh, unused path in ``path``'s folder, for a write that is renamed into place.

    The file is created as a plain ``open()`` creates one (0666 less the process's umask, and a
    folder's default ACL applies), not 0600 as ``mkstemp`` would: what is renamed into place
    must be as readable by the other users of a shared filesystem as any file written there.
    """
    for _ in range(_NAME_ATTEMPTS):
        name = path.parent / f".{path.name}.{os.urandom(8).hex()}.tmp"
        try:
            handle = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0),
                             _PLAIN_FILE_MODE)
        except FileExistsError:
            continue
        os.close(handle)
        return name
    raise FileExistsError(f"{str(path.parent)!r}: no unused temporary name for {path.name!r} "
                          f"after {_NAME_ATTEMPTS} attempts")


def atomic_write_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that readers see the old or the new file, never a part."""
    temporary = temporary_path_beside(path)
    try:
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
