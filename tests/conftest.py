"""Shared pytest configuration."""

from __future__ import annotations

import os

import pytest

# Tests run on 2-core CI machines: keep torch/numba from oversubscribing.
os.environ.setdefault("NUMBA_NUM_THREADS", "2")


@pytest.fixture
def portal(monkeypatch):
    """A fake ENCODE portal on 127.0.0.1 (tests/encode_fixtures), stopped after the test."""
    from encode_fixtures.portal import running_portal

    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    with running_portal() as fake:
        yield fake


@pytest.fixture(autouse=True)
def _fresh_settings():
    """Each test starts from chipvi.settings' defaults (the CLI's -q sets verbosity, and
    module-scoped fixtures may have run commands that did)."""
    from chipvi._settings import settings

    settings.verbosity, settings._num_threads, settings._seed = "info", None, None
    settings.progress_bar = True
    yield
