"""Run the examples in the package's docstrings (pytest is not set up with --doctest-modules)."""

import doctest
import importlib
import pkgutil

import pytest

import rigorous_recorder

MODULES = sorted(
    ["rigorous_recorder"]
    + [
        info.name
        for info in pkgutil.walk_packages(rigorous_recorder.__path__, "rigorous_recorder.")
        if not info.name.endswith(".__main__")  # importing it would run the command line
    ]
)


@pytest.mark.parametrize("name", MODULES)
def test_the_docstring_examples_of_a_module_pass(name):
    """Every >>> example in the module's docstrings gives the output written under it."""
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, verbose=False, report=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"


def test_the_package_tour_has_examples():
    """The package docstring opens with a doctest tour that is actually run."""
    assert doctest.testmod(rigorous_recorder, report=False).attempted >= 5
