"""tl / pl on the posterior keys of a briefly trained ChIPVI (tiny simulation)."""

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
    model.add_posterior(adata)
    regions = chipvi.tl.call_enriched_regions(adata, q=0.05)
    assert set(regions["group"]) <= set(model.group_names) and len(regions) > 0
    called = overlap_mask(adata, regions["chrom"], regions["start"], regions["end"])
    enriched = sim.truth[[f"enriched_{g}" for g in model.group_names]].any(axis=1).to_numpy()
    # Even after a short fit, most called bins are truly enriched in some group.
    assert (called & enriched).sum() / called.sum() > 0.5
    # Any other per-bin values through key=: the technical-null p-values of the model.
    pv = model.get_enrichment_pvalues(level="group")
    adata.obsm["p"], adata.obsm["q"] = pv["pvalue"], pv["qvalue"]
    by_pvalue = chipvi.tl.call_enriched_regions(adata, key="q", pvalue_key="p", key_added="by_p")
    assert by_pvalue["pvalue"].notna().all() and (by_pvalue["qvalue"] >= -np.log10(0.05)).all()
    written = chipvi.io.write_peaks(adata, tmp_path / "peaks", format="narrowPeak")
    assert sorted(written) == sorted(set(regions["group"]))
    paths = chipvi.io.write_bigwig(adata, tmp_path / "bw", key="chipvi_group_lfe")
    bw = pyBigWig.open(str(paths[model.group_names[0]]))
    assert bw.chroms() == sim.chrom_sizes
    bw.close()
    back = chipvi.io.read_bigwig_bins(paths, adata)
    lfe = model.get_denoised(level="group")  # the same pass as the stored keys
    np.testing.assert_allclose(back.to_numpy(), lfe.to_numpy(), rtol=1e-5, atol=1e-6)
    axes = chipvi.pl.tracks(adata, "chr1:20,000-60,000", save=tmp_path / "t.png")
    # raw and control per library, the denoised group tracks, the regions
    assert len(axes) == 2 * adata.n_vars + len(model.group_names) + 1
    plt.close("all")


def test_differential_and_model_plots(trained):
    sim, adata, model = trained
    g1, g2 = model.group_names
    model.add_posterior(adata)
    table = chipvi.tl.differential_enrichment(adata, g1, g2)
    true_diff = (sim.truth[f"lfe_{g1}"] - sim.truth[f"lfe_{g2}"]).to_numpy()
    # Posterior lfc follows the true difference in log enrichment.
    assert np.corrcoef(table["lfc_mean"], true_diff)[0, 1] > 0.3
    # The model method is the same computation (on a fresh AnnData it runs add_posterior).
    fresh = adata.copy()
    del fresh.uns["chipvi_posterior"]
    via_model = model.differential_enrichment(g1, g2, adata=fresh, key_added="de_model")
    assert "chipvi_posterior" in fresh.uns and "de_model" in fresh.obsm
    pd.testing.assert_frame_equal(via_model, table)
    assert len(chipvi.pl.differential(adata).collections) == 3
    assert len(chipvi.pl.training_history(model).get_lines()) >= 1
    assert len(chipvi.pl.technical_fit(adata, samples=[adata.var_names[0]])) == 1
    conc = chipvi.tl.replicate_concordance(adata, denoised="chipvi_own_lfe")
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
    assoc = chipvi.tl.gene_expression_association(
        adata, genes, expr, denoised="chipvi_group_lfe", window=0
    )
    assert (assoc["spearman_denoised"] > 0).all()
    plt.close("all")
