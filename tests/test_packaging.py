"""The sdist and the wheel hold every file of the source tree, and the installed wheel works.

pyproject.toml lists the packages by hand; MANIFEST.in grafts the package folders, so every
data file goes into the sdist and, through include-package-data, into the wheel. These tests
compare the built archives and the package list with the files found in a copy of the tree
(names derived from the tree, not from a list kept here), so a subpackage or data file that
the build would leave out fails here, not on a user's machine. The dependency floors that
constraints-floor.txt pins must be the ones pyproject.toml declares.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPOSITORY = Path(__file__).resolve().parents[1]
SMOKE_SCRIPT = REPOSITORY / "tests" / "scripts" / "smoke_installed.py"
#: Source folder -> where its files belong inside the wheel (pyproject.toml's package-dir).
WHEEL_LOCATIONS = {"src/rigorous_recorder": "rigorous_recorder", "integrations": "rigorous_recorder/integrations"}
#: Folders whose every file the sdist carries, so that it builds, tests and runs the examples.
SDIST_FOLDERS = (*WHEEL_LOCATIONS, "tests", "examples")
C_SOURCE = "src/rigorous_recorder/_speedups.c"
FLOOR_CONSTRAINTS = REPOSITORY / "constraints-floor.txt"


@dataclass
class Built:
    """One build: the source files it was made from, and the archives' member names."""

    source_files: list[str]
    sdist_names: set[str]
    wheel_names: set[str]
    wheel: Path


def source_files() -> list[str]:
    """Files a fresh clone would hold (tracked, plus new files git does not ignore), relative to the root."""
    if not (REPOSITORY / ".git").exists():
        pytest.skip("needs a git checkout to know which files are source files")
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPOSITORY, capture_output=True, check=True,
    ).stdout.decode()
    return sorted(name for name in listed.split("\0") if name and (REPOSITORY / name).is_file())


def copy_sources(files: list[str], destination: Path) -> Path:
    """Copy ``files`` from the repository to ``destination``, so that building leaves the working tree alone."""
    for name in files:
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPOSITORY / name, target)
    return destination


def build(source: Path, files: list[str], out: Path) -> Built:
    """Build the sdist, then the wheel from that sdist (as ``python -m build`` does), and list both."""
    result = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(source)],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, f"python -m build failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    with tarfile.open(sdist) as archive:
        sdist_names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    with zipfile.ZipFile(wheel) as archive:
        wheel_names = set(archive.namelist())
    return Built(files, sdist_names, wheel_names, wheel)


def package_names(files: list[str]) -> set[str]:
    """Dotted names of the packages (folders with an ``__init__.py``) that ``files`` hold, as installed."""
    names = set()
    for name in files:
        for folder, location in WHEEL_LOCATIONS.items():
            if name.startswith(folder + "/") and name.endswith("/__init__.py"):
                names.add((location + name[len(folder):-len("/__init__.py")]).replace("/", "."))
    return names


def listed_packages() -> set[str]:
    """The packages that pyproject.toml's [tool.setuptools] lists."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    return set(tomllib.loads((REPOSITORY / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])


def package_list_mismatch(listed: set[str], files: list[str]) -> dict[str, list[str]]:
    """Packages that ``files`` hold but ``listed`` lacks, and listed ones that the files lack."""
    found = package_names(files)
    return {"not listed": sorted(found - listed), "listed, not in the tree": sorted(listed - found)}


def declared_requirements() -> dict[str, list[Requirement]]:
    """pyproject.toml's requirements by group: ``"dependencies"`` and each extra's name."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((REPOSITORY / "pyproject.toml").read_text())["project"]
    groups = {"dependencies": project["dependencies"], **project["optional-dependencies"]}
    return {group: [Requirement(line) for line in lines] for group, lines in groups.items()}


def floor_pins() -> dict[str, Version]:
    """constraints-floor.txt's ``name==version`` lines, by canonical name."""
    pins = {}
    for line in FLOOR_CONSTRAINTS.read_text().splitlines():
        if line.split("#")[0].strip():
            requirement = Requirement(line.split("#")[0])
            (specifier,) = requirement.specifier
            assert specifier.operator == "==", f"constraints-floor.txt: {line!r} is not a name==version pin"
            pins[canonicalize_name(requirement.name)] = Version(specifier.version)
    return pins


def missing_from_wheel(built: Built) -> list[str]:
    """Source files under a package folder whose place in the wheel is empty."""
    missing = []
    for name in built.source_files:
        for folder, location in WHEEL_LOCATIONS.items():
            if name.startswith(folder + "/") and location + name[len(folder):] not in built.wheel_names:
                missing.append(name)
    return missing


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Built:
    """The sdist and wheel of the working tree as it is (uncommitted files included)."""
    files = source_files()
    source = copy_sources(files, tmp_path_factory.mktemp("source"))
    return build(source, files, tmp_path_factory.mktemp("dist"))


def test_every_package_is_listed_in_pyproject():
    """pyproject.toml lists exactly the folders that hold an ``__init__.py``."""
    # An unlisted one would still reach the wheel through MANIFEST.in's graft, but as data files,
    # which setuptools deprecates.
    mismatch = package_list_mismatch(listed_packages(), source_files())
    assert mismatch == {"not listed": [], "listed, not in the tree": []}


def test_package_list_check_names_a_forgotten_package():
    """The check above names a subpackage that the list forgets."""
    mismatch = package_list_mismatch(listed_packages() - {"rigorous_recorder.store"}, source_files())
    assert mismatch["not listed"] == ["rigorous_recorder.store"]


def test_floor_constraints_pin_exactly_the_declared_floors():
    """Each core dependency is pinned in constraints-floor.txt, and each pin is the ``>=`` floor declared for it."""
    floors: dict[str, set[Version]] = {}
    for requirements in declared_requirements().values():
        for requirement in requirements:
            for specifier in requirement.specifier:
                if specifier.operator == ">=":
                    floors.setdefault(canonicalize_name(requirement.name), set()).add(Version(specifier.version))
    pins = floor_pins()
    unpinned = [str(r) for r in declared_requirements()["dependencies"] if canonicalize_name(r.name) not in pins]
    assert unpinned == [], "core dependencies without a floor pin in constraints-floor.txt"
    # name: (pin, floors declared for it), for each pin that is not the one floor declared
    mismatched = {name: (str(pin), sorted(map(str, floors.get(name, ())))) for name, pin in pins.items()
                  if floors.get(name) != {pin}}
    assert mismatched == {}


@pytest.mark.slow
def test_wheel_holds_every_module_and_data_file(built):
    """Each file under src/rigorous_recorder and integrations/ is in the wheel, at its package's place."""
    assert any(name.startswith("src/rigorous_recorder/store/") for name in built.source_files), "no store files?"
    assert missing_from_wheel(built) == []


@pytest.mark.slow
def test_wheel_holds_the_compiled_hot_path(built):
    """With a C compiler present, the wheel carries the compiled ``_speedups`` extension."""
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        pytest.skip(f"no C compiler ({compiler}): the wheel is pure Python by design")
    assert f"rigorous_recorder/_speedups{sysconfig.get_config_var('EXT_SUFFIX')}" in built.wheel_names


@pytest.mark.slow
def test_sdist_holds_every_source_file(built):
    """The sdist carries the C source and every file of the packages, the tests and the examples."""
    assert C_SOURCE in built.sdist_names
    expected = [name for name in built.source_files if name.startswith(tuple(f"{folder}/" for folder in SDIST_FOLDERS))]
    assert [name for name in expected if name not in built.sdist_names] == []


def smoke_test(wheel: Path, folder: Path) -> str:
    """Install ``wheel`` into a fresh venv under ``folder`` (dependencies lent by this
    interpreter) and run the smoke script there; returns what it printed."""
    venv = folder / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    venv_python = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv_python), "install", "--quiet", "--no-deps", "--no-index",
         str(wheel)],
        check=True,
    )
    # The dependencies come from this interpreter's site-packages, after the venv's own (which holds the wheel).
    site_packages = subprocess.run(
        [venv_python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    lent = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (Path(site_packages) / "lent_dependencies.pth").write_text("\n".join(lent) + "\n")
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run(
        [venv_python, SMOKE_SCRIPT], cwd=folder, env=environment, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "smoke test passed" in result.stdout
    return result.stdout


@pytest.mark.slow
def test_installed_wheel_passes_the_smoke_test(built, tmp_path):
    """The wheel installed into a fresh venv (dependencies lent by this one) imports, records, queries, runs its CLI,
    with the compiled loops when the wheel carries them."""
    compiled = any("_speedups" in name and not name.endswith(".c") for name in built.wheel_names)
    assert f"hot path: {'C' if compiled else 'Python'} loops" in smoke_test(built.wheel, tmp_path)


@pytest.mark.slow
def test_without_a_c_compiler_the_sdist_installs_pure_python(built, tmp_path):
    """Where no C compiler works, the sdist still builds (the extension is optional) a wheel
    without ``_speedups``, and that wheel records and queries with the Python loops."""
    (sdist,) = built.wheel.parent.glob("*.tar.gz")
    environment = {**os.environ, "CC": "/bin/false"}  # the compiler setuptools calls, failing
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "--quiet",
         "--wheel-dir", str(tmp_path / "dist"), str(sdist)],
        env=environment, capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, f"pip wheel failed without a compiler:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        assert [name for name in archive.namelist() if "_speedups" in name and not name.endswith(".c")] == []
    assert "hot path: Python loops" in smoke_test(wheel, tmp_path)
