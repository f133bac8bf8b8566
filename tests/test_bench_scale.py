"""benchmarks/bench_scale.py: simulated counts drawn and written a chromosome at a time."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_scale  # noqa: E402
from chipvi.io import open_store  # noqa: E402


def test_counts_store_equals_the_genome_drawn_in_memory(tmp_path, monkeypatch):
    """The store, written a chromosome at a time, holds what simulate_counts draws for the
    whole genome; each chromosome's draws are its own (the same for any genome around it)."""
    path = tmp_path / "counts.zarr"
    monkeypatch.setattr(bench_scale, "_APPEND_BINS", 700)  # several appends per chromosome
    assert bench_scale.write_counts_store(5300, 4, 2000, str(path)) == 5300
    back = open_store(path).to_memory()
    want = bench_scale.simulate_counts([2000, 2000, 1300], 4)
    np.testing.assert_array_equal(back.X, want.X)
    for key in ("control", "mapq", "control_mapq"):
        np.testing.assert_array_equal(back.layers[key], want.layers[key])
    pd.testing.assert_frame_equal(back.obs, want.obs)
    assert back.obs_names[-1] == "5299" and list(back.obs["chrom"].cat.categories) == [
        "chr1", "chr2", "chr3"
    ]  # fmt: skip
    np.testing.assert_allclose(back.var["depth"], want.X.sum(0, dtype=np.float64))
    np.testing.assert_allclose(back.var["control_depth"], want.layers["control"][:, 0].sum())
    assert back.uns["chipvi"]["chrom_sizes"] == {"chr1": 400_000, "chr2": 400_000, "chr3": 260_000}
    # chr2 alone is what it is inside the genome; chr1 is what a one-chromosome genome draws.
    other = bench_scale.simulate_counts([700, 2000], 4)
    np.testing.assert_array_equal(other.X[700:], want.X[2000:4000])
    alone = bench_scale.simulate_counts([2000], 4)
    np.testing.assert_array_equal(alone.X, want.X[:2000])
    # Real counts: every library has reads, peaks raise the first replicates above background.
    assert (want.X.sum(0) > 1000).all() and want.X.max() > 10
