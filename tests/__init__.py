"""The test suite; a package so that test modules import the helpers of conftest.py relatively."""
