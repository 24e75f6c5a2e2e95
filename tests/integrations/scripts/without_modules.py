"""Run a Python script as if some packages were not installed.

``python without_modules.py pandas,lightning SCRIPT [ARGS...]``

README's main example installs only the ``lightning`` extra: pytorch-lightning, without
pandas and without the unified ``lightning`` package, both of which the dev install has.
Lookups still find a spec without an origin (torch asks ``find_spec("pandas")`` at import),
but importing a hidden package fails as it would on a machine without it.
"""

import importlib.abc
import importlib.machinery
import runpy
import sys


class _Absent(importlib.abc.Loader):
    def create_module(self, spec):
        raise ModuleNotFoundError(f"No module named {spec.name!r}", name=spec.name)

    def exec_module(self, module):
        """Never reached: create_module raises."""


class _Hidden(importlib.abc.MetaPathFinder):
    def __init__(self, names: set[str]) -> None:
        self.names = names

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in self.names:
            return importlib.machinery.ModuleSpec(name, _Absent())
        return None


sys.meta_path.insert(0, _Hidden(set(sys.argv.pop(1).split(","))))
script = sys.argv.pop(1)
runpy.run_path(script, run_name="__main__")
