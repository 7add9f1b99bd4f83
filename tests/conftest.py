"""Test-suite set-up: offline, no sockets, quiet, deterministic, small thread pools.

Sockets are blocked by pytest-socket (``--disable-socket`` in pyproject); hub
libraries are put in offline mode before anything imports them.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("NEURODECODE_OFFLINE", "1")
os.environ.setdefault("NEURODECODE_PROGRESS", "0")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Each test gets its own NEURODECODE_HOME / cache, so nothing leaks between tests."""
    home = tmp_path_factory.mktemp("ndhome")
    monkeypatch.setenv("NEURODECODE_HOME", str(home))
    monkeypatch.setenv("NEURODECODE_CACHE", str(home / "cache"))
    yield


@pytest.fixture
def rng():
    """A seeded NumPy generator."""
    return np.random.default_rng(0)


def pytest_configure(config):
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass
