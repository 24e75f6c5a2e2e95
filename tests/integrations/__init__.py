"""Tests of the Lightning and Keras adapters; ``lightning_tiny`` is importable as ``tests.integrations.lightning_tiny``."""
