"""Run README's Python blocks in one namespace, in order: ``python readme_blocks.py BLOCKS.json``.

BLOCKS.json is a list of ``[first line in README.md, source]``; each block is compiled under the
name README.md at its own line, so a traceback points at the README line that failed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

if __name__ == "__main__":
    namespace = {"__name__": "__main__"}
    for line, source in json.loads(Path(sys.argv[1]).read_text()):
        print(f"README.md:{line}: running", flush=True)
        exec(compile("\n" * (line - 1) + source, "README.md", "exec"), namespace)
