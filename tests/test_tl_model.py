"""Model-aware entry points on a tiny simulation with a briefly trained ChIPVI."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pyBigWig  # noqa: E402
import pytest  # noqa: E402

import chipvi  # noqa: E402
from _analysis_data import train_on_simulation  # noqa: E402
from chipvi._bins import overlap_mask  # noqa: E402


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train_on_simulation(
        tmp_path_factory.mktemp("sim"), seed=3, n_chroms=1, chrom_length=60_000, n_groups=2,
        depths=[40_000, 30_000], control_depths=[30_000, 20_000], peaks_per_mb=100,
        domains_per_mb=20,
    )  # fmt: skip


def test_regions_tracks_and_peaks_from_model(trained, tmp_path):
    sim, adata, model = trained
    regions = chipvi.tl.call_enriched_regions(model, method="posterior", q=0.05)
    assert set(regions["group"]) <= set(model.group_names) and len(regions) > 0
    called = overlap_mask(adata, regions["chrom"], regions["start"], regions["end"])
    enriched = sim.truth[[f"enriched_{g}" for g in model.group_names]].any(axis=1).to_numpy()
    # Even after a short fit, most called bins are truly enriched in some group.
    assert (called & enriched).sum() / called.sum() > 0.5
    by_pvalue = chipvi.tl.call_enriched_regions(model, method="pvalue", key_added="by_p")
    assert by_pvalue["pvalue"].notna().all() and (by_pvalue["qvalue"] >= -np.log10(0.05)).all()
    written = chipvi.io.write_peaks(adata, tmp_path / "peaks", format="narrowPeak")
    assert sorted(written) == sorted(set(regions["group"]))
    adata.obsm["lfe"] = model.get_denoised(level="group")
    paths = chipvi.io.write_bigwig(adata, tmp_path / "bw", key="lfe")
    bw = pyBigWig.open(str(paths[model.group_names[0]]))
    assert bw.chroms() == sim.chrom_sizes
    bw.close()
    back = chipvi.io.read_bigwig_bins(paths, adata)
    np.testing.assert_allclose(back.to_numpy(), adata.obsm["lfe"].to_numpy(), rtol=1e-5, atol=1e-6)
    axes = chipvi.pl.tracks(adata, "chr1:20,000-60,000", keys=["X", "lfe"], save=tmp_path / "t.png")
    assert len(axes) == adata.n_vars + len(model.group_names) + 1
    plt.close("all")


def test_differential_and_model_plots(trained):
    sim, adata, model = trained
    g1, g2 = model.group_names
    table = chipvi.tl.differential_enrichment(model, g1, g2, n_samples=30)
    true_diff = (sim.truth[f"lfe_{g1}"] - sim.truth[f"lfe_{g2}"]).to_numpy()
    # Posterior lfc follows the true difference in log enrichment.
    assert np.corrcoef(table["lfc_mean"], true_diff)[0, 1] > 0.3
    # The model method is the same computation, stored under its own key.
    via_model = model.differential_enrichment(g1, g2, n_samples=30, key_added="de_model")
    assert list(via_model.columns) == list(table.columns)
    assert "de_model" in adata.uns and "de_model" in adata.obsm
    assert np.corrcoef(via_model["lfc_mean"], table["lfc_mean"])[0, 1] > 0.9
    assert len(chipvi.pl.differential(adata).collections) == 3
    assert len(chipvi.pl.training_history(model).get_lines()) >= 1
    assert len(chipvi.pl.technical_fit(model, samples=[adata.var_names[0]])) == 1
    conc = chipvi.tl.replicate_concordance(adata, denoised=model)
    assert np.isfinite(conc["pearson_denoised"]).all()
    # Genes whose "promoter" bins are every 3rd enriched bin and every 20th bin elsewhere, with
    # expression = true fold enrichment there.
    enriched_any = sim.truth[[f"enriched_{g}" for g in model.group_names]].any(axis=1).to_numpy()
    pick = np.r_[np.flatnonzero(enriched_any)[::3], np.flatnonzero(~enriched_any)[::20]]
    rows = sim.truth.iloc[np.sort(pick)]
    genes = rows[["chrom", "start", "end"]].assign(
        strand="+", gene_id=[f"g{i}" for i in range(len(rows))]
    )
    expr = pd.DataFrame(
        np.exp(rows[[f"lfe_{g}" for g in model.group_names]].to_numpy()),
        index=genes["gene_id"], columns=model.group_names,
    )  # fmt: skip
    assoc = chipvi.tl.gene_expression_association(adata, genes, expr, denoised=model, window=0)
    assert (assoc["spearman_denoised"] > 0).all()
    plt.close("all")
