"""Differential enrichment from the group posterior that ``model.add_posterior`` stores."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

import chipvi
from _analysis_data import make_adata, truth_mask, truth_posterior
from chipvi._errors import ChipviInputError


def test_differential_recovers_known_changes(tmp_path):
    # Group posteriors N(2, 0.2) in each group's true blocks, N(0, 0.2) elsewhere.
    adata = truth_posterior(make_adata(), sd=0.2)
    table = chipvi.tl.differential_enrichment(adata, "A", "B")
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
        "group1": "A", "group2": "B", "delta": 0.5, "fdr": 0.05, "merge_gap": 0,
        "min_bins": 1, "source": "uns['chipvi_posterior']",
    }  # fmt: skip
    assert adata.obsm["chipvi_differential"] is table
    adata.write_h5ad(tmp_path / "a.h5ad")  # the result and its params survive h5ad
    paths = chipvi.io.write_peaks(adata, tmp_path / "d.bed", key="chipvi_differential")
    assert paths["all"].read_text().count("\n") == 3


def test_differential_rest_and_thresholds():
    adata = truth_posterior(make_adata(), sd=0.2)
    rest = chipvi.tl.differential_enrichment(adata, "B", key_added=None)
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
    assert "chipvi_differential" not in adata.uns
