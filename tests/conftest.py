"""Fixtures shared across the test suite."""

import pytest

from poise.golden.data import Dataset, load_dataset


@pytest.fixture(scope="session")
def mnist() -> Dataset:
    """Real MNIST from the user's data cache (downloaded once on the first run, then reused)."""
    return load_dataset("mnist")
