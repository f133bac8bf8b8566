"""QC on a bins store: read a chunk at a time, the numbers of the same bins in memory."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import chipvi
from _chipvi_synthetic import make_chip_adata
from chipvi import ChipviInputError
from chipvi.io import open_store, store_writer
from chipvi.tl import _stream

CHUNK = 256
METRICS = ["pearson", "spearman", "jaccard"]


def _adata():
    adata, truth = make_chip_adata(n_bins=3000, depths=(400_000, 150_000, 300_000, 200_000),
                                   groups=("A", "A", "B", "B"), seed=5)  # fmt: skip
    n1 = 1800  # two chromosomes
    start = np.where(np.arange(3000) < n1, np.arange(3000), np.arange(3000) - n1) * 200
    chrom = np.where(np.arange(3000) < n1, "chr1", "chr2")
    adata.obs = pd.DataFrame(
        {"chrom": pd.Categorical(chrom), "start": start, "end": start + 200},
        index=[f"{c}:{s}-{s + 200}" for c, s in zip(chrom, start, strict=True)],
    )
    adata.uns["chipvi"] = {"bin_size": 200, "chrom_sizes": {"chr1": n1 * 200, "chr2": 240_000}}
    rng = np.random.default_rng(0)
    lfe = truth[["lfe_A", "lfe_A", "lfe_B", "lfe_B"]].to_numpy()
    den = (lfe + rng.normal(0, 0.3, lfe.shape)).astype(np.float32)
    den[rng.random(den.shape) < 0.3] = 0.0  # heavy ties, as a posterior shrunk to its prior
    den[7, 1] = np.nan  # a bin left out of one pair
    adata.layers["den"] = den
    return adata


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    adata = _adata()
    path = tmp_path_factory.mktemp("qc") / "bins.zarr"
    with store_writer(path, chunk=CHUNK) as writer:
        for a in range(0, adata.n_obs, 1000):
            block = adata[a : a + 1000]
            obs = block.obs.copy()
            obs["chrom"] = pd.Categorical(obs["chrom"], adata.obs["chrom"].cat.categories)
            writer.append(obs, np.asarray(block.X), {k: block.layers[k] for k in adata.layers})
        writer.finish(adata.var, dict(adata.uns))
    return open_store(path), adata


def _numbers(table):
    return table[[c for c in table.columns if c.split("_")[0] in METRICS]].to_numpy(float)


def test_concordance_of_a_store_equals_in_memory(pair):
    store, adata = pair
    for top_k in (0.05, 40):
        want = chipvi.tl.replicate_concordance(adata, denoised="den", top_k=top_k)
        got = chipvi.tl.replicate_concordance(store.path, denoised="den", top_k=top_k)
        pd.testing.assert_frame_equal(got[want.columns[:3]], want[want.columns[:3]])
        np.testing.assert_allclose(_numbers(got), _numbers(want), rtol=1e-12, atol=1e-12)
    # The in-memory numbers are scipy's and numpy's over the bins where both are finite.
    x, y = adata.layers["den"][:, 0], adata.layers["den"][:, 1].astype(np.float64)
    ok = np.isfinite(y)
    row = want.iloc[0]
    assert row["spearman_denoised"] == pytest.approx(stats.spearmanr(x[ok], y[ok])[0], abs=1e-12)
    assert row["pearson_denoised"] == pytest.approx(stats.pearsonr(x[ok], y[ok])[0], abs=1e-12)
    top = [set(np.argsort(-v[ok], kind="stable")[:40]) for v in (x, y)]
    assert row["jaccard_denoised"] == len(top[0] & top[1]) / len(top[0] | top[1])
    # Recorded in the open store's uns only; the store on disk is unchanged.
    store = open_store(store.path)
    table = chipvi.tl.replicate_concordance(store, top_k=40)
    assert store.uns["chipvi_concordance"]["table"] is table
    assert "chipvi_concordance" not in open_store(store.path).uns


def test_concordance_ranks_through_files_when_values_overflow(pair, monkeypatch, tmp_path):
    """Past MAX_DISTINCT values a column is ranked in buckets, the buckets of several values
    through files: every number as in memory, the files removed."""
    store, adata = pair
    want = chipvi.tl.replicate_concordance(adata, denoised="den", top_k=0.05, key_added=None)
    monkeypatch.setattr("chipvi.tl._qc.MAX_DISTINCT", 100)
    monkeypatch.setattr(_stream, "SAMPLE_SIZE", 512)
    monkeypatch.setattr(_stream.SpilledRanks.__init__, "__defaults__", (128,))  # 24 blocks
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)
    groups = []  # files of values written, per column ranked through files
    finish = _stream.SpilledRanks.finish
    monkeypatch.setattr(_stream.SpilledRanks, "finish", lambda self: groups.append(
        len(list(self.folder.glob("g*")))) or finish(self))  # fmt: skip
    got = chipvi.tl.replicate_concordance(store, denoised="den", top_k=0.05, key_added=None)
    np.testing.assert_allclose(_numbers(got), _numbers(want), rtol=1e-12, atol=1e-12)
    assert len(groups) >= 4 and max(groups) > 5  # the 4 denoised columns at least
    assert not list(tmp_path.iterdir())


def test_fingerprint_and_frip_of_a_store_equal_in_memory(pair):
    store, adata = pair
    want = chipvi.tl.fingerprint(adata, n_points=300)
    got = chipvi.tl.fingerprint(store, n_points=300)
    pd.testing.assert_frame_equal(got, want, rtol=1e-12)
    pd.testing.assert_frame_equal(store.uns["chipvi_fingerprint"]["curve"],
                                  adata.uns["chipvi_fingerprint"]["curve"], rtol=1e-12)  # fmt: skip
    # The curve at every bin is the sorted counts' cumulative share.
    y = np.asarray(adata.X[:, 2], dtype=np.float64)
    curve = np.cumsum(np.sort(y)) / y.sum()
    pick = np.unique(np.linspace(0, adata.n_obs - 1, 300).round().astype(int))
    np.testing.assert_allclose(want["auc"].iloc[2], curve.mean(), rtol=1e-12)
    np.testing.assert_allclose(adata.uns["chipvi_fingerprint"]["curve"]["B_R1"], curve[pick])
    regions = pd.DataFrame({"chrom": ["chr1", "chr2", "chr2"], "start": [1000, 0, 9050],
                            "end": [60_000, 2000, 30_000], "group": ["A", "B", "A"]})  # fmt: skip
    for per_group in (True, False):
        want = chipvi.tl.frip(adata, regions, per_group=per_group, key_added=None)
        got = chipvi.tl.frip(store.path, regions, per_group=per_group, key_added=None)
        pd.testing.assert_series_equal(got, want, rtol=1e-12)
    obs = adata.obs
    hit = np.zeros(adata.n_obs, bool)
    for chrom, start, end in regions[["chrom", "start", "end"]].itertuples(index=False):
        hit |= ((obs["chrom"] == chrom) & (obs["end"] > start) & (obs["start"] < end)).to_numpy()
    x = np.asarray(adata.X[:, 0], dtype=np.float64)
    assert want.iloc[0] == pytest.approx(x[hit].sum() / x.sum())


def test_qc_of_a_store_says_what_to_run(pair):
    store, _ = pair
    with pytest.raises(ChipviInputError, match=r"no layer 'chipvi_own_lfe'.*add_posterior"):
        chipvi.tl.replicate_concordance(store, denoised="chipvi_own_lfe")
    with pytest.raises(ChipviInputError, match=rf"{store.path.name} has no layer 'ctrl'"):
        chipvi.tl.fingerprint(store, control_layer="ctrl")
    with pytest.raises(ChipviInputError, match="no layer 'nope'"):
        chipvi.tl.frip(store, pd.DataFrame({"chrom": ["chr1"], "start": [0], "end": [10]}),
                       layer="nope")  # fmt: skip
