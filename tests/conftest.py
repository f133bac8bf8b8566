"""Shared pytest configuration."""

from __future__ import annotations

import os

# Tests run on 2-core CI machines: keep torch/numba from oversubscribing.
os.environ.setdefault("NUMBA_NUM_THREADS", "2")
