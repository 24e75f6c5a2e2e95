"""Shared plumbing for the benchmark scripts.

Every contender runs in its own fresh process: ``run_workload`` starts a given
Python interpreter on this file, which imports the benchmark script by path,
calls one of its workload functions and writes the returned measurements as
JSON to a file the parent reads back.  Our library runs under the project's
interpreter (``sys.executable``); rigorous-recorder 1.4.4 runs under a
script-created virtual environment, ``benchmarks/.venv-rr-1.4.4``, that
``baseline_python`` creates on first use.

This module is imported by the workload processes of both interpreters, so it
uses the standard library only.
"""

from __future__ import annotations

import gc
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

BENCHMARKS_DIR = Path(__file__).resolve().parent
BASELINE_VERSION = "1.4.4"
BASELINE_VENV = BENCHMARKS_DIR / f".venv-rr-{BASELINE_VERSION}"
WORKLOAD_TIMEOUT_S = 1800


# --------------------------------------------------------------------------
# interpreters
# --------------------------------------------------------------------------

def ours_python() -> str:
    """The interpreter that has our library installed: the one running now."""
    return sys.executable


def baseline_python() -> str:
    """Return the 1.4.4 venv's interpreter, creating the venv if needed.

    Idempotent: an existing venv whose ``rigorous-recorder`` is already
    ``BASELINE_VERSION`` is reused untouched.
    """
    python = BASELINE_VENV / "bin" / "python"
    if library_version(str(python)) == BASELINE_VERSION:
        return str(python)
    if not python.exists():
        print(f"creating {BASELINE_VENV} ...", file=sys.stderr, flush=True)
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", str(BASELINE_VENV)], check=True)
    print(f"installing rigorous-recorder=={BASELINE_VERSION} ...", file=sys.stderr, flush=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         f"rigorous-recorder=={BASELINE_VERSION}"],
        check=True,
    )
    return str(python)


def library_version(python: str) -> str | None:
    """The installed rigorous-recorder version seen by ``python``, or None."""
    if not Path(python).exists():
        return None
    probe = ("import importlib.metadata as m\n"
             "try: print(m.version('rigorous-recorder'))\n"
             "except m.PackageNotFoundError: print('')")
    result = subprocess.run([python, "-I", "-c", probe], capture_output=True, text=True)
    return result.stdout.strip() or None


def python_version(python: str) -> str:
    """The ``X.Y.Z`` version of the interpreter ``python``."""
    probe = "import platform; print(platform.python_version())"
    result = subprocess.run([python, "-I", "-c", probe], capture_output=True, text=True, check=True)
    return result.stdout.strip()


def machine_header(baseline: str) -> str:
    """Markdown lines describing the machine and both contenders' versions."""
    return "\n".join([
        f"- machine: {os.cpu_count()} CPUs, {platform.machine()}, {platform.platform()};"
        f" load average {os.getloadavg()[0]:.2f} at the end of the run",
        f"- ours: rigorous-recorder {library_version(ours_python()) or 'NOT INSTALLED'}"
        f" on Python {python_version(ours_python())} ({ours_python()})",
        f"- baseline: rigorous-recorder {library_version(baseline) or 'NOT INSTALLED'}"
        f" on Python {python_version(baseline)} ({baseline})",
    ])


# --------------------------------------------------------------------------
# running a workload in a fresh process
# --------------------------------------------------------------------------

def run_workload(python: str, script: str, function: str, **kwargs) -> dict:
    """Run ``script``'s ``function(**kwargs)`` in a fresh ``python`` process.

    The process is isolated (``python -I``): neither the working directory nor
    ``PYTHONPATH`` can put the other contender's library on its path.
    Returns the function's JSON-able dict of measurements.  A workload that
    raises comes back as ``{"error": "<traceback>"}`` so that one broken
    contender does not stop the others.
    """
    with tempfile.TemporaryDirectory(prefix="rr-bench-") as scratch:
        result_path = Path(scratch) / "result.json"
        command = [python, "-I", __file__, str(Path(script).resolve()), function,
                   json.dumps(kwargs), str(result_path)]
        try:
            completed = subprocess.run(command, capture_output=True, text=True,
                                       timeout=WORKLOAD_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return {"error": f"{function}({kwargs}) ran past {WORKLOAD_TIMEOUT_S} s"}
        if result_path.exists():
            return json.loads(result_path.read_text())
        return {"error": f"workload process exited {completed.returncode} without a result\n"
                         f"{completed.stdout[-4000:]}{completed.stderr[-4000:]}"}


def _child_main(script: str, function: str, kwargs_json: str, result_path: str) -> None:
    """Entry point of a workload process: call the function, write its JSON."""
    sys.path.insert(0, str(BENCHMARKS_DIR))
    try:
        spec = importlib.util.spec_from_file_location("benchmark_workload", script)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        result = getattr(module, function)(**json.loads(kwargs_json))
    except BaseException:  # report anything, including SystemExit from a library
        result = {"error": traceback.format_exc()}
    Path(result_path).write_text(json.dumps(result))


# --------------------------------------------------------------------------
# measuring inside a workload process
# --------------------------------------------------------------------------

def rss_bytes() -> int:
    """Resident set size of this process after a full garbage collection."""
    gc.collect()
    with open("/proc/self/statm") as statm:
        resident_pages = int(statm.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def loaded_library() -> dict:
    """Which rigorous_recorder this process imported (version, and for ours which loops)."""
    import importlib.metadata
    import rigorous_recorder
    version = importlib.metadata.version("rigorous-recorder")
    try:
        from rigorous_recorder._hotpath import COMPILED
    except ImportError:  # 1.4.4 has no compiled loops to choose from
        pass
    else:
        version += " (C loops)" if COMPILED else " (Python loops)"
    return {"library_version": version, "library_file": rigorous_recorder.__file__}


def folder_bytes(folder: str | Path) -> int:
    """Total size of the regular files under ``folder``."""
    return sum(path.stat().st_size for path in Path(folder).rglob("*") if path.is_file())


# --------------------------------------------------------------------------
# reporting
# --------------------------------------------------------------------------

def median_of(runs: list[dict]) -> dict:
    """Merge repeated runs of one contender: the median of each numeric field.

    Any run that failed makes the merged result that failure.
    """
    for run in runs:
        if "error" in run:
            return run
    merged = dict(runs[0])
    for key, value in runs[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            merged[key] = statistics.median(run[key] for run in runs)
    return merged


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(headers) + " |",
             "| " + " | ".join("---" for _ in headers) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(value: float | None, digits: int = 1) -> str:
    """Format a number with thousands separators, or ``n/a`` for None."""
    return "n/a" if value is None else f"{value:,.{digits}f}"


class Targets:
    """Collects PASS/FAIL verdicts and prints one line per target."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.failed = False

    def check(self, name: str, measured: float | None, limit: float, unit: str = "") -> None:
        """Record ``measured <= limit``; a missing measurement is a FAIL."""
        if measured is None:
            verdict, shown = "FAIL", "not measured (error above)"
        else:
            verdict = "PASS" if measured <= limit else "FAIL"
            shown = f"{measured:,.3f}{unit}"
        self.failed |= verdict == "FAIL"
        self.lines.append(f"{verdict}: {name}: {shown} (target <= {limit:,.3f}{unit})")

    def report(self) -> str:
        """All verdict lines, one per target."""
        return "\n".join(self.lines)


def print_errors(results: dict[str, dict]) -> None:
    """Print the traceback of every contender that failed."""
    for name, result in results.items():
        if "error" in result:
            print(f"\n### {name} failed\n\n```\n{result['error'].rstrip()}\n```")


if __name__ == "__main__":
    _child_main(*sys.argv[1:5])
