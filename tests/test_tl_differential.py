"""Differential enrichment from the group posterior that ``model.add_posterior`` stores."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

import chipvi
from _analysis_data import make_adata, truth_mask, truth_posterior, write_posterior
from chipvi._errors import ChipviInputError


def test_differential_recovers_known_changes(tmp_path):
    # Group posteriors N(2, 0.2) in each group's true blocks, N(0, 0.2) elsewhere.
    adata = truth_posterior(make_adata(), sd=0.2)
    table = chipvi.tl.differential_enrichment(adata, "A", "B", window=1)
    up = truth_mask(adata.obs, "A") & ~truth_mask(adata.obs, "B")
    down = truth_mask(adata.obs, "B") & ~truth_mask(adata.obs, "A")
    np.testing.assert_array_equal(table["direction"].to_numpy(), up.astype(int) - down.astype(int))
    np.testing.assert_allclose(table.loc[up, "lfc_mean"], 2.0, rtol=1e-6)
    # Independent groups: sds add in quadrature; P(lfc > 0.5) with lfc ~ N(2, 0.283).
    np.testing.assert_allclose(table["lfc_sd"], np.sqrt(0.08), rtol=1e-6)
    np.testing.assert_allclose(table.loc[up, "prob_up"], norm.sf(0.5, 2.0, np.sqrt(0.08)))
    same = ~up & ~down  # lfc 0: P(|lfc| > 0.5) = 2 Phi(-0.5 / 0.283) = 0.077
    np.testing.assert_allclose(table.loc[same, "prob_change"], 2 * norm.sf(0.5 / np.sqrt(0.08)))
    assert table["qvalue"].between(0, 1).all()
    stored = adata.uns["chipvi_differential"]
    regions = stored["regions"]
    assert list(
        zip(regions["chrom"], regions["start"], regions["end"], regions["direction"], strict=True)
    ) == [
        ("chr1", 6000, 6400, 1),
        ("chr2", 2000, 3000, 1),
        ("chr2", 4000, 5600, -1),
    ]
    assert regions["name"].iloc[2] == "A_vs_B_down_3"
    assert (regions["qvalue"] > 5).all()  # -log10 q of bins with P(change) ~ 1 - 1e-7
    assert stored["params"] == {
        "group1": "A", "group2": "B", "delta": 0.5, "fdr": 0.05, "window": 1, "merge_gap": 0,
        "min_bins": 1, "source": "uns['chipvi_posterior']",
    }  # fmt: skip
    assert adata.obsm["chipvi_differential"] is table
    adata.write_h5ad(tmp_path / "a.h5ad")  # the result and its params survive h5ad
    paths = chipvi.io.write_peaks(adata, tmp_path / "d.bed", key="chipvi_differential")
    assert paths["all"].read_text().count("\n") == 3


def test_differential_window_ignores_shifted_steps():
    """Both groups share a peak whose steps their posteriors place a bin apart: each flank
    bin alone shows a confident change of 1 (sd 0.14); the 5-bin window's mean (1/5) does not.
    A true 4-bin change is called, and no flank bin outside it."""
    adata = make_adata()
    lfe = pd.DataFrame(0.0, index=adata.obs_names, columns=["A", "B"])
    # the same peak; B's shoulders start and end a bin later
    lfe.iloc[10:18, 0] = [0, 1, 3, 3, 3, 1, 0, 0]
    lfe.iloc[10:18, 1] = [0, 0, 3, 3, 3, 1, 1, 0]
    lfe.iloc[30:34, 0] = 2.0  # a true change: A only
    write_posterior(adata, lfe, 0.1)
    per_bin = chipvi.tl.differential_enrichment(adata, "A", "B", window=1, key_added=None)
    np.testing.assert_array_equal(per_bin["direction"].iloc[10:18], [0, 1, 0, 0, 0, 0, -1, 0])
    table = chipvi.tl.differential_enrichment(adata, "A", "B")
    called = np.flatnonzero(table["is_differential"].to_numpy())
    np.testing.assert_array_equal(called, [30, 31, 32, 33])
    assert (table["direction"].iloc[called] == 1).all()
    # the window's mean and sd (mean of the bins' sds: neighbours positively correlated)
    np.testing.assert_allclose(table["window_lfc"].iloc[[11, 30, 29]], [1 / 5, 6 / 5, 4 / 5])
    np.testing.assert_allclose(table["window_sd"], np.sqrt(0.02), rtol=1e-6)
    # bin 29's window changes (0.8 ± 0.14) but the bin itself does not: not called
    assert table["prob_up"].iloc[29] > 0.8 and table["direction"].iloc[29] == 0
    # windows stop at chromosome ends: chr1's last bin averages itself and two neighbours
    last = np.flatnonzero((adata.obs["chrom"] == "chr1").to_numpy())[-1]
    lfe.iloc[last, 0], lfe.iloc[last + 1, 1] = 3.0, 9.0
    write_posterior(adata, lfe, 0.1)
    edge = chipvi.tl.differential_enrichment(adata, "A", "B", key_added=None)
    np.testing.assert_allclose(edge["window_lfc"].iloc[last], 1.0)


def test_differential_rest_and_thresholds():
    adata = truth_posterior(make_adata(), sd=0.2)
    rest = chipvi.tl.differential_enrichment(adata, "B", window=1, key_added=None)
    assert "chipvi_differential" not in adata.uns
    assert rest["is_differential"].sum() == 7 + 8  # A-only bins (down) and B-only bins (up)
    strict = chipvi.tl.differential_enrichment(adata, "A", "B", delta=3.0, key_added=None)
    assert not strict["is_differential"].any()


def test_differential_errors():
    adata = make_adata()
    with pytest.raises(ChipviInputError, match=r"run model.add_posterior\(adata\) first"):
        chipvi.tl.differential_enrichment(adata, "A", "B")
    truth_posterior(adata)
    with pytest.raises(ChipviInputError, match="Unknown group 'C'"):
        chipvi.tl.differential_enrichment(adata, "C", "A")
    with pytest.raises(ChipviInputError, match="must differ"):
        chipvi.tl.differential_enrichment(adata, "A", "A")
    with pytest.raises(ChipviInputError, match="fdr"):
        chipvi.tl.differential_enrichment(adata, "A", "B", fdr=1.5)
    for bad in (2, 0, 3.0, True):
        with pytest.raises(ChipviInputError, match="window must be an odd number"):
            chipvi.tl.differential_enrichment(adata, "A", "B", window=bad)
    assert "chipvi_differential" not in adata.uns
