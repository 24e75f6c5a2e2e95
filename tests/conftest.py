"""Test configuration shared by every test module."""

import os

# Keras 3 needs a backend chosen before it is imported; the tests use torch's.
os.environ.setdefault("KERAS_BACKEND", "torch")
