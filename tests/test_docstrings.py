"""The ``>>>`` examples in the package's docstrings: the public API has them, and they pass.

pytest is not run with --doctest-modules; these tests run the examples instead.
"""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import inspect
import pkgutil
from pathlib import Path

import pytest

import rigorous_recorder
import rigorous_recorder.integrations

#: Modules that import a machine-learning framework (seconds, the first time in a process), and that framework.
FRAMEWORK_MODULES = {"rigorous_recorder.integrations.keras": "keras", "rigorous_recorder.integrations.lightning": "torch"}
#: Modules whose every example is marked +SKIP today, and why: a debt to pay, not a rule.
ALL_SKIPPED = {
    "rigorous_recorder.ui": "the dashboard's examples start a server on a real collection",
    "rigorous_recorder.ui.server": "the dashboard's examples start a server on a real collection",
}


def _source_has_examples(name: str) -> bool:
    origin = importlib.util.find_spec(name).origin
    return origin is not None and origin.endswith(".py") and ">>>" in Path(origin).read_text(encoding="utf-8")


#: Every module of the package and of its integrations whose source holds an example.
MODULES = sorted(
    name
    for name in [
        "rigorous_recorder",
        "rigorous_recorder.integrations",
        *(
            info.name
            for package in (rigorous_recorder, rigorous_recorder.integrations)
            for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}.")
        ),
    ]
    if not name.endswith(".__main__") and _source_has_examples(name)
)

#: The classes and functions of ``__all__`` (the errors are drawn as a tree in ``errors``).
PUBLIC = [
    name
    for name in rigorous_recorder.__all__
    if inspect.isfunction(member := getattr(rigorous_recorder, name))
    or (inspect.isclass(member) and not issubclass(member, BaseException))
]


def runnable(tests: list[doctest.DocTest]) -> list[doctest.Example]:
    """The examples of ``tests`` that doctest runs (those not marked ``+SKIP``)."""
    return [example for test in tests for example in test.examples if not example.options.get(doctest.SKIP)]


def _module_param(name: str) -> object:
    if name in FRAMEWORK_MODULES:
        return pytest.param(name, marks=pytest.mark.slow)
    if name in ALL_SKIPPED:
        return pytest.param(name, marks=pytest.mark.xfail(reason=ALL_SKIPPED[name], strict=True))
    return name


@pytest.mark.parametrize("name", [_module_param(name) for name in MODULES])
def test_the_docstring_examples_of_a_module_run_and_pass(name):
    """The module's examples run (not all skipped) and each gives the output written under it."""
    if name in FRAMEWORK_MODULES:
        pytest.importorskip(FRAMEWORK_MODULES[name])
    tests = doctest.DocTestFinder().find(importlib.import_module(name))
    assert runnable(tests), f"every example in {name} is marked +SKIP: none of them runs"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in tests:
        runner.run(test, out=lambda text: None)
    failed, attempted = runner.summarize(verbose=False)
    assert failed == 0, f"{failed} of {attempted} examples failed in {name}; see: python -m doctest -v <its file>"


@pytest.mark.parametrize("name", PUBLIC)
def test_every_public_class_and_function_shows_an_example(name):
    """The docstring of each class and function in ``__all__`` holds an example that runs."""
    tests = doctest.DocTestFinder(recurse=False).find(getattr(rigorous_recorder, name), name, globs={})
    assert runnable(tests), f"rigorous_recorder.{name}: its docstring has no >>> example that runs"


def test_the_package_tour_has_examples():
    """The package docstring opens with a doctest tour of at least five examples."""
    assert len(runnable(doctest.DocTestFinder(recurse=False).find(rigorous_recorder))) >= 5
