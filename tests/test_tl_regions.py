"""call_enriched_regions on q-values / probabilities stored in AnnData, and on a model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import chipvi
from _analysis_data import make_adata, truth_mask
from chipvi._errors import ChipviInputError
from chipvi.tl._regions import bayesian_qvalues, bh_qvalues


def _qframe(adata, groups=("A", "B"), low=1e-4, high=0.5):
    cols = {g: np.where(truth_mask(adata.obs, g), low, high) for g in groups}
    return pd.DataFrame(cols, index=adata.obs_names)


def test_calls_truth_blocks_with_summit_and_score():
    adata = make_adata()
    adata.obsm["q"] = _qframe(adata)
    sig = pd.DataFrame({"A": np.arange(adata.n_obs, dtype=float), "B": 0.0}, index=adata.obs_names)
    sig.iloc[7, 1] = 9.0  # summit of B's chr1 block at bin 7 (1400-1600)
    adata.obsm["fe"] = sig
    regions = chipvi.tl.call_enriched_regions(adata, key="q", signal_key="fe")
    assert adata.uns["chipvi_regions"] is regions
    a = regions[regions["group"] == "A"]
    assert list(zip(a["chrom"], a["start"], a["end"], strict=True)) == [
        ("chr1", 1000, 2000),
        ("chr1", 6000, 6400),
        ("chr2", 2000, 3000),
    ]
    assert list(a["n_bins"]) == [5, 2, 5]
    assert np.allclose(a["qvalue"], 4.0) and list(a["score"]) == [40, 40, 40]
    # A's signal increases along the genome: summit is each region's last bin.
    assert list(a["summit"]) == [900, 300, 900]
    assert a["summit_bin"].iloc[0] == "chr1:1800-2000"
    b = regions[regions["group"] == "B"]
    assert b["summit_bin"].iloc[0] == "chr1:1400-1600" and b["signal"].iloc[0] == 9.0
    assert b["summit"].iloc[0] == 1500 - 1000
    assert regions["pvalue"].isna().all()
    assert adata.uns["chipvi_regions_params"]["q"] == 0.05


def test_merge_gap_min_bins_and_threshold():
    adata = make_adata()
    q = _qframe(adata, groups=("A",))
    q.iloc[7, 0] = 0.2  # hole inside chr1:1000-2000
    adata.obsm["q"] = q
    split = chipvi.tl.call_enriched_regions(adata, key="q", key_added="split")
    assert list(split["start"][:2]) == [1000, 1600] and list(split["end"][:2]) == [1400, 2000]
    merged = chipvi.tl.call_enriched_regions(adata, key="q", merge_gap=200, key_added="m")
    assert (merged["start"].iloc[0], merged["end"].iloc[0], merged["n_bins"].iloc[0]) == (
        1000,
        2000,
        4,
    )
    long = chipvi.tl.call_enriched_regions(adata, key="q", min_bins=3, key_added="l")
    assert list(long["end"] - long["start"]) == [1000]  # chr2 block of 5; the 2-bin ones dropped
    loose = chipvi.tl.call_enriched_regions(adata, key="q", q=0.25, key_added="loose")
    assert loose["n_bins"].iloc[0] == 5


def test_probability_and_library_level():
    adata = make_adata()
    prob = np.where(truth_mask(adata.obs, "A")[:, None], 0.999, 0.01) * np.ones((1, adata.n_vars))
    adata.layers["prob"] = prob
    regions = chipvi.tl.call_enriched_regions(
        adata, key="prob", kind="probability", level="library", groups=["A_1"]
    )
    assert set(regions["group"]) == {"A_1"} and regions["n_bins"].sum() == 12


def test_fdr_helpers():
    q = bayesian_qvalues(np.array([0.99, 0.5, np.nan, 0.9]))
    # Ranked 0.99, 0.9, 0.5: FDRs 0.01, 0.055, 0.2033
    np.testing.assert_allclose(q[[0, 3, 1]], [0.01, 0.055, 0.61 / 3])
    assert np.isnan(q[2])
    np.testing.assert_allclose(
        bh_qvalues(np.array([0.01, 0.04, 0.03, np.nan])), [0.03, 0.04, 0.04, np.nan]
    )


def test_region_errors():
    adata = make_adata()
    adata.obsm["q"] = _qframe(adata)
    with pytest.raises(ChipviInputError, match="Pass key="):
        chipvi.tl.call_enriched_regions(adata)
    with pytest.raises(ChipviInputError, match="no key 'nope'"):
        chipvi.tl.call_enriched_regions(adata, key="nope")
    with pytest.raises(ChipviInputError, match="Unknown group"):
        chipvi.tl.call_enriched_regions(adata, key="q", groups=["C"])
    with pytest.raises(ChipviInputError, match="q must be"):
        chipvi.tl.call_enriched_regions(adata, key="q", q=0)
    with pytest.raises(ChipviInputError, match="no layer"):
        chipvi.tl.call_enriched_regions(adata, key="q", level="library")
    with pytest.raises(ChipviInputError, match="AnnData or a ChIPVI model"):
        chipvi.tl.call_enriched_regions(np.zeros(3), key="q")
    assert "chipvi_regions" not in adata.uns


class FakeModel:
    """Implements the parts of the ChIPVI contract that region calling uses."""

    def __init__(self, adata):
        self.adata = adata

    def get_enrichment_pvalues(self, adata=None, indices=None, level="group", batch_size=None):
        q = _qframe(adata)
        return {"pvalue": q / 10, "qvalue": q}

    def get_denoised(self, adata=None, kind="log_fold_enrichment", level="library", **kwargs):
        assert level == "group"
        truth = np.column_stack([truth_mask(adata.obs, g) for g in ("A", "B")])
        values = {
            "fold_enrichment": np.array([[2.0, 3.0]]) * np.ones_like(truth),
            "log_fold_enrichment": np.where(truth, 2.0, 0.0),
            "sd": np.full(truth.shape, 0.3),
        }[kind]
        return pd.DataFrame(values, index=adata.obs_names, columns=["A", "B"])


def test_model_entry_point():
    adata = make_adata()
    regions = chipvi.tl.call_enriched_regions(FakeModel(adata), method="pvalue", q=0.01)
    assert len(regions) == 5 and "chipvi_regions" in adata.uns
    np.testing.assert_allclose(regions["pvalue"], 5.0)
    assert set(regions.loc[regions["group"] == "B", "signal"]) == {3.0}


def test_model_posterior_method():
    adata = make_adata()
    regions = chipvi.tl.call_enriched_regions(FakeModel(adata), method="posterior", min_lfe=1.0)
    # P(lfe > 1) is 0.9996 in truth bins (loc 2, sd 0.3) and ~0.0004 elsewhere.
    assert list(regions["n_bins"]) == [5, 2, 5, 5, 8]
    assert regions["pvalue"].isna().all()
    assert adata.uns["chipvi_regions_params"]["source"] == "model:posterior"
    with pytest.raises(ChipviInputError, match="method must be"):
        chipvi.tl.call_enriched_regions(FakeModel(adata), method="magic")


def test_no_regions_gives_empty_typed_table(tmp_path):
    adata = make_adata()
    adata.obsm["q"] = pd.DataFrame({"A": 0.9, "B": 0.9}, index=adata.obs_names)
    regions = chipvi.tl.call_enriched_regions(adata, key="q")
    assert regions.empty and regions["start"].dtype == np.int64
    adata.write_h5ad(tmp_path / "a.h5ad")  # uns tables survive h5ad
    chipvi.io.write_peaks(adata, tmp_path / "p.bed")
    assert (tmp_path / "p.bed").read_text() == ""
