"""Differential enrichment from posterior draws (contract fake model with known differences)."""

from __future__ import annotations

import numpy as np
import pytest

import chipvi
from _analysis_data import make_adata, truth_mask
from chipvi._errors import ChipviInputError


class DrawModel:
    """Posterior draws = true group log fold enrichment + Gaussian noise (the contract's shape)."""

    group_names = ["A", "B"]

    def __init__(self, adata, sd=0.2, seed=0):
        self.adata = adata
        self.truth = np.column_stack([2.0 * truth_mask(adata.obs, g) for g in self.group_names])
        self.sd = sd
        self.rng = np.random.default_rng(seed)
        self.calls = []

    def sample_log_fold_enrichment(
        self, adata=None, indices=None, level="group", n_samples=100, batch_size=None
    ):
        assert level == "group"
        self.calls.append(len(indices))
        loc = self.truth[indices]
        return loc[None] + self.sd * self.rng.standard_normal((n_samples, *loc.shape))


def test_differential_recovers_known_changes():
    adata = make_adata()
    model = DrawModel(adata)
    table = chipvi.tl.differential_enrichment(model, "A", "B", n_samples=200, chunk_size=30)
    assert model.calls[:2] == [30, 30] and sum(model.calls) == adata.n_obs
    up = truth_mask(adata.obs, "A") & ~truth_mask(adata.obs, "B")
    down = truth_mask(adata.obs, "B") & ~truth_mask(adata.obs, "A")
    np.testing.assert_array_equal(table["direction"].to_numpy(), up.astype(int) - down.astype(int))
    np.testing.assert_allclose(table.loc[up, "lfc_mean"], 2.0, atol=0.1)
    assert (table.loc[up, "prob_up"] == 1).all() and (
        table.loc[~up & ~down, "prob_change"] < 0.5
    ).all()
    assert table["qvalue"].between(0, 1).all()
    regions = adata.uns["chipvi_differential"]
    assert list(
        zip(regions["chrom"], regions["start"], regions["end"], regions["direction"], strict=True)
    ) == [
        ("chr1", 6000, 6400, 1),
        ("chr2", 2000, 3000, 1),
        ("chr2", 4000, 5600, -1),
    ]
    assert regions["name"].iloc[2] == "A_vs_B_down_3"
    # All draws agree in these bins: q is reported as below 1/n_samples, not as 1e-300.
    np.testing.assert_allclose(regions["qvalue"], np.log10(200))
    assert adata.obsm["chipvi_differential"] is table
    # Regions table is writable as peaks.
    assert set(regions.columns) >= {"chrom", "start", "end", "name", "score", "signal", "qvalue"}


def test_differential_rest_and_thresholds():
    adata = make_adata()
    rest = chipvi.tl.differential_enrichment(DrawModel(adata), "B", key_added=None)
    assert "chipvi_differential" not in adata.uns
    assert rest["is_differential"].sum() == 7 + 8  # A-only bins (down) and B-only bins (up)
    strict = chipvi.tl.differential_enrichment(
        DrawModel(adata), "A", "B", delta=3.0, key_added=None
    )
    assert not strict["is_differential"].any()


def test_differential_errors():
    adata = make_adata()
    model = DrawModel(adata)
    with pytest.raises(ChipviInputError, match="Unknown group 'C'"):
        chipvi.tl.differential_enrichment(model, "C", "A")
    with pytest.raises(ChipviInputError, match="must differ"):
        chipvi.tl.differential_enrichment(model, "A", "A")
    with pytest.raises(ChipviInputError, match="fdr"):
        chipvi.tl.differential_enrichment(model, "A", "B", fdr=1.5)
    assert model.calls == []
