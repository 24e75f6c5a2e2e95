"""The optional C extension; everything else about the build is in pyproject.toml.

``_speedups`` compiles the recorder's hot-path loops (see ``src/rigorous_recorder/_hotpath.py``).
It is optional: where no C compiler is found the install goes on, and the pure-Python
twins of those loops are used.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("rigorous_recorder._speedups", ["src/rigorous_recorder/_speedups.c"], optional=True)])
