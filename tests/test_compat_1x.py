"""1.x compatibility, side by side: the API rigorous-recorder 1.4.4 documents gives the same records here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent / "scripts" / "compat_1x.py"


@pytest.fixture(scope="session")
def python_1x(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An interpreter with rigorous-recorder 1.4.4 from PyPI, in its own virtual environment."""
    folder = tmp_path_factory.mktemp("rr-1.4.4")
    venv.create(folder, with_pip=False)  # this pip installs into it: bootstrapping its own costs ~8 s of CPU
    python = str(folder / "bin" / "python")
    installed = subprocess.run([sys.executable, "-m", "pip", "--python", python, "install", "-q",
                                "rigorous-recorder==1.4.4"], capture_output=True, text=True)
    if installed.returncode != 0 and "No matching distribution" not in installed.stderr:
        pytest.skip(f"PyPI cannot be reached here: {installed.stderr.strip().splitlines()[-1:]}")
    assert installed.returncode == 0, installed.stderr
    return python


def run(python: str, folder: Path) -> dict:
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    if python == sys.executable:
        environment = dict(os.environ)
    done = subprocess.run([python, str(SCRIPT), str(folder)], capture_output=True, text=True, cwd=folder,
                          env=environment)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_the_documented_1x_api_records_the_same_here_as_in_1_4_4(python_1x, tmp_path):
    """commit(additional_info=...), number_of_records, local_data writes, SubRecordKeeper, swap_out,
    ExperimentCollection's 1.x arguments: the same calls give the same records in 1.4.4 and here."""
    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    assert run(sys.executable, tmp_path / "new") == run(python_1x, tmp_path / "old")
