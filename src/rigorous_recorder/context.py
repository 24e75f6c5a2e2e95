"""What every experiment records about where it ran, as MLflow and W&B do, without user code.

``capture()`` gives the git commit and whether the work tree had changes (when the current
directory is in a git repository), the command line, the host name, the Python version and
the versions of the key packages that are installed (torch, lightning, keras, numpy). An
``ExperimentCollection(path, record_context=False)`` records none of it.
"""

from __future__ import annotations

import functools
import sys
from typing import Any

from .store.process import this_host

#: Packages whose installed version each experiment records (under ``<name>_version``).
PACKAGES = ("rigorous-recorder", "torch", "lightning", "pytorch-lightning", "keras", "numpy")


def capture() -> dict[str, Any]:
    """The context of an experiment started now by this process."""
    return {**_process_context(), **_git()}


@functools.cache
def _process_context() -> dict[str, Any]:
    import platform
    from importlib import metadata  # a tenth of `import rigorous_recorder`: only a new run needs it

    context: dict[str, Any] = {
        "command": " ".join([sys.executable, *sys.argv]) if sys.argv and sys.argv[0] else sys.executable,
        "hostname": this_host(),
        "python_version": platform.python_version(),
    }
    for package in PACKAGES:
        try:
            context[f"{package.replace('-', '_')}_version"] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return context


@functools.cache
def _git() -> dict[str, Any]:
    """The commit of the repository holding the current directory, and whether it had changes
    (read once per process: a sweep's runs share the state the process started from)."""
    import subprocess  # only a new run needs it, not a reader

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if commit.returncode != 0:
            return {}
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"git_commit": commit.stdout.strip(), "git_dirty": bool(status.stdout.strip())}
