"""benchmarks/_peers.py: the parts that do not run a peer tool."""

from __future__ import annotations

import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from _peers import (  # noqa: E402
    PeerCache,
    bedgraph_to_bins,
    moving_average,
    pooled_smoothed_ratio,
)


def test_bedgraph_to_bins_matches_a_per_base_mean(tmp_path):
    rng = np.random.default_rng(1)
    sizes = {"c1": 3_030, "c2": 1_000}
    rows, per_base = [], {c: np.full(n, 0.5) for c, n in sizes.items()}  # fill 0.5
    for chrom, size in sizes.items():
        pos = 0
        while pos < size:
            step = int(rng.integers(1, 300))
            if rng.random() < 0.3:  # a gap: not covered, counts as the fill
                pos += step
                continue
            end = min(size, pos + step)
            value = float(rng.normal())
            rows.append((chrom, pos, end, value))
            per_base[chrom][pos:end] = value
            pos = end
    path = tmp_path / "x.bdg"
    pd.DataFrame(rows).to_csv(path, sep="\t", header=False, index=False)
    bins = pd.DataFrame(
        [(c, s, min(s + 200, n)) for c, n in sizes.items() for s in range(0, n, 200)],
        columns=["chrom", "start", "end"],
    )
    expected = [per_base[c][s:e].mean() for c, s, e in bins.itertuples(index=False)]
    np.testing.assert_allclose(bedgraph_to_bins(path, bins, fill=0.5), expected, atol=1e-12)


def test_moving_average_stays_inside_each_chromosome():
    x = np.arange(8.0)
    chrom = np.array(["a"] * 5 + ["b"] * 3)
    np.testing.assert_allclose(moving_average(x, chrom, 3), [0.5, 1, 2, 3, 3.5, 5.5, 6, 6.5])


def test_pooled_smoothed_ratio_counts_a_shared_control_once():
    chip = np.array([[2, 0], [4, 2], [0, 2], [0, 0]])
    control = np.array([[1, 1], [1, 1], [1, 1], [1, 1]])
    adata = ad.AnnData(
        X=chip,
        obs=pd.DataFrame({"chrom": ["a"] * 4}, index=[f"b{i}" for i in range(4)]),
        var=pd.DataFrame(
            {"depth": [10, 10], "control_depth": [40, 40], "control_bam": ["in.bam", "in.bam"]},
            index=["r1", "r2"],
        ),
        layers={"control": control},
    )
    got = pooled_smoothed_ratio(adata, [0, 1], window=1)
    # Pooled ChIP depth 20, one control of depth 40: control scaled by 1/2 per bin.
    np.testing.assert_allclose(got, np.log2((np.array([2, 6, 2, 0]) + 1) / (0.5 + 1)))


def test_peer_cache_key_follows_file_content_and_parameters(tmp_path):
    bam = tmp_path / "a.bam"
    bam.write_bytes(b"one")
    bins = pd.DataFrame({"chrom": ["a"], "start": [0], "end": [200]})
    cache = PeerCache(tmp_path / "cache")
    calls = []

    def compute():
        calls.append(1)
        return np.array([len(calls)], float)

    assert cache.get("peer", [bam], {"k": 1}, bins, compute)[0] == 1
    assert cache.get("peer", [bam], {"k": 1}, bins, compute)[0] == 1  # reused
    assert cache.get("peer", [bam], {"k": 2}, bins, compute)[0] == 2  # other parameter
    bam.write_bytes(b"two")
    assert cache.get("peer", [bam], {"k": 1}, bins, compute)[0] == 3  # other content
    assert len(calls) == 3


@pytest.mark.parametrize("window", [1, 3])
def test_moving_average_of_a_constant_is_the_constant(window):
    x = np.full((6, 2), 4.0)
    np.testing.assert_allclose(moving_average(x, np.array(["a"] * 6), window), x)
