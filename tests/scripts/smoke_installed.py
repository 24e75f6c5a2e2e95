"""Smoke test of rigorous-recorder as a user installs it: a built wheel in its own venv.

Run it with that venv's python, from outside the repository:
``/tmp/venv/bin/python /path/to/tests/scripts/smoke_installed.py``. It checks that the package
comes from the venv (not from a source tree), imports every module of it, records a small
collection, queries it with ``sql()`` and runs the ``rigorous-recorder`` console script.
A module may fail to import only for want of a dependency that one of the package's extras
declares (``integrations.keras`` without Keras). One line per check; exit code 1 at the first
failure.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import pkgutil
import re
import subprocess
import sys
import tempfile
from pathlib import Path

DISTRIBUTION = "rigorous-recorder"
DEVELOPMENT_EXTRA = "dev"
REPOSITORY = Path(__file__).resolve().parents[2]


def fail(message: str) -> None:
    """Stop the smoke test with ``message`` on stderr."""
    sys.exit(f"smoke test failed: {message}")


def optional_import_names() -> set[str]:
    """Top-level import names of what the user-facing extras add (``pytorch-lightning`` -> ``pytorch_lightning``)."""
    names = set()
    for requirement in importlib.metadata.requires(DISTRIBUTION) or []:
        name, _, marker = requirement.partition(";")
        extra = re.search(r"""extra\s*==\s*["']([^"']+)["']""", marker)
        if extra and extra.group(1) != DEVELOPMENT_EXTRA:
            names.add(re.split(r"[\s\[<>=!~]", name.strip(), maxsplit=1)[0].replace("-", "_").lower())
    names.discard(DISTRIBUTION.replace("-", "_"))
    return names


def check_installed_copy() -> None:
    """The package imported is the installed one, not the repository's source."""
    import rigorous_recorder

    location = Path(rigorous_recorder.__file__).resolve()
    if location.is_relative_to(REPOSITORY):
        fail(f"rigorous_recorder was imported from the repository ({location}), not from an installed wheel")
    from rigorous_recorder._hotpath import COMPILED

    loops = "C loops" if COMPILED else "Python loops"
    print(f"ok: rigorous_recorder {rigorous_recorder.__version__} from {location.parent}; hot path: {loops}")


def import_module(name: str, optional: set[str]) -> str | None:
    """Import ``name``; returns why it was skipped (a missing optional dependency), fails on anything else."""
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as error:
        if (error.name or "").split(".")[0] not in optional:
            fail(f"{name} does not import: {error}")
        return f"{name} (needs {error.name})"
    return None


def check_every_module_imports() -> None:
    """Every module of the installed package imports, or lacks only an optional dependency."""
    import rigorous_recorder

    optional = optional_import_names()
    imported, skipped = [], []
    # walk_packages yields a package before importing it to look inside, so the loop judges every
    # import; a package that cannot import (the UI without its extra) is then left unexplored.
    for module in pkgutil.walk_packages(rigorous_recorder.__path__, "rigorous_recorder."):
        if module.name.endswith(".__main__"):
            continue  # importing it runs the command line; check_command_line runs it
        reason = import_module(module.name, optional)
        (skipped if reason else imported).append(reason or module.name)
    for required in ("rigorous_recorder.store", "rigorous_recorder.integrations", "rigorous_recorder.cli"):
        if required not in imported:
            fail(f"{required} is missing from the installed package")
    print(f"ok: {len(imported)} modules imported; skipped for want of an extra: {', '.join(skipped) or 'none'}")


def check_record_and_query(folder: Path) -> Path:
    """Record two models' steps into a collection and query them back with SQL; returns its path."""
    from rigorous_recorder import ExperimentCollection, Recorder

    path = folder / "smoke"
    collection = ExperimentCollection(path)
    with collection.new_experiment(seed=7) as experiment:
        for model in ("a", "b"):
            train = Recorder(model=model).set_parent(experiment)
            for step in range(50):
                train.push(step=step, loss=1 / (step + 1))
    rows = collection.sql(
        "SELECT model, count(*), sum(step), max(seed) FROM records GROUP BY model ORDER BY model"
    ).fetchall()
    expected = [("a", 50, 1225, 7), ("b", 50, 1225, 7)]
    if rows != expected:
        fail(f"sql() returned {rows}, expected {expected}")
    print(f"ok: recorded and queried {sum(row[1] for row in rows)} records")
    return path


def check_command_line(collection_path: Path) -> None:
    """``python -m rigorous_recorder --version`` and the ``rigorous-recorder`` console script's ``ls`` run."""
    version = subprocess.run(
        [sys.executable, "-m", "rigorous_recorder", "--version"], capture_output=True, text=True, check=False
    )
    if version.returncode != 0:
        fail(f"python -m rigorous_recorder --version exited {version.returncode}: {version.stderr.strip()}")
    script = Path(sys.executable).parent / "rigorous-recorder"
    if not script.exists():
        fail(f"console script {script} was not installed")
    listing = subprocess.run([script, "ls", str(collection_path)], capture_output=True, text=True, check=False)
    run_lines = [line.split() for line in listing.stdout.splitlines()[2:]]
    if listing.returncode != 0 or len(run_lines) != 1 or run_lines[0][:3] != ["1", "0", "ok"] or "100" not in run_lines[0]:
        fail(f"rigorous-recorder ls exited {listing.returncode}, printed:\n{listing.stdout}{listing.stderr}")
    print(f"ok: {version.stdout.strip()}; `rigorous-recorder ls` lists the run with its 100 records")


def main() -> None:
    check_installed_copy()
    check_every_module_imports()
    with tempfile.TemporaryDirectory() as folder:
        check_command_line(check_record_and_query(Path(folder)))
    print("smoke test passed")


if __name__ == "__main__":
    main()
