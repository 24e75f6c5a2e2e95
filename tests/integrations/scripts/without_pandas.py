"""Run a Python script as if pandas were not installed: ``python without_pandas.py SCRIPT``.

README's main example installs only the ``lightning`` extra, which brings no pandas. Lookups
still find a spec without an origin (torch asks ``find_spec("pandas")`` at import), but the
import itself fails as it would on a machine without pandas.
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


class _NoPandas(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "pandas" or name.startswith("pandas."):
            return importlib.machinery.ModuleSpec(name, _Absent())
        return None


sys.meta_path.insert(0, _NoPandas())
script = sys.argv.pop(1)
runpy.run_path(script, run_name="__main__")
