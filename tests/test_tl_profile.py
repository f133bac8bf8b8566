"""tl.profile / pl.profile / pl.heatmap / `chipvi plot-profile` on bins with a known shape."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from anndata import AnnData

import chipvi
from chipvi.cli import main

BIN = 100
N_BINS = 1000  # chr1: 100 kb


def _adata(regions: pd.DataFrame) -> AnnData:
    """Two libraries: a triangle peaked at each region's centre (A), and a ramp that rises
    over 5 bins downstream of each TSS along the strand (B)."""
    starts = np.arange(N_BINS) * BIN
    a = np.zeros(N_BINS)
    b = np.zeros(N_BINS)
    for r in regions.itertuples():
        c = ((r.start + r.end) // 2) // BIN
        for k in range(-3, 4):
            a[c + k] += 4 - abs(k)  # 1 2 3 4 3 2 1
        tss = (r.start if r.strand == "+" else r.end - 1) // BIN
        step = 1 if r.strand == "+" else -1
        for k in range(1, 6):
            b[tss + step * k] += k  # 1 .. 5 downstream
    obs = pd.DataFrame(
        {"chrom": pd.Categorical(["chr1"] * N_BINS), "start": starts, "end": starts + BIN},
        index=[f"chr1:{s}-{s + BIN}" for s in starts],
    )
    var = pd.DataFrame({"group": ["g", "g"], "depth": [1e6, 1e6]}, index=["A", "B"])
    adata = AnnData(np.c_[a, b].astype(np.float32), obs=obs, var=var)
    adata.uns["chipvi"] = {"bin_size": BIN, "chrom_sizes": {"chr1": N_BINS * BIN}}
    adata.obsm["lfe"] = pd.DataFrame({"g": a + b}, index=adata.obs_names)
    return adata


REGIONS = pd.DataFrame(
    {
        "chrom": ["chr1"] * 4,
        "start": [10_000, 30_050, 60_000, 99_500],
        "end": [11_000, 31_050, 61_000, 99_900],
        "strand": ["+", "-", "-", "+"],
        "name": ["r1", "r2", "r3", "edge"],
    }
)


def test_profile_recovers_known_shapes():
    adata = _adata(REGIONS.iloc[:3])
    res = chipvi.tl.profile(adata, REGIONS, upstream=500, downstream=700)
    np.testing.assert_array_equal(res["positions"], np.arange(-5, 8) * BIN)
    assert res["columns"] == ["A", "B"] and res["params"]["upstream"] == 500
    m = res["matrix"]
    assert m.shape == (4, 2, 13)
    triangle = np.array([0, 0, 1, 2, 3, 4, 3, 2, 1, 0, 0, 0, 0], float)
    for i in range(3):  # counts per million of a depth of 1e6 = the counts
        np.testing.assert_array_equal(m[i, 0], triangle)
    # the last region sits at the chromosome end: positions past it are NaN
    assert np.isnan(m[3, 0, -3:]).all() and np.isfinite(m[3, 0, :8]).all()
    assert adata.uns["chipvi_profile"] is res

    tss = chipvi.tl.profile(adata, REGIONS.iloc[:3], reference="tss", upstream=300,
                            downstream=600, key_added="tss")  # fmt: skip
    ramp = np.array([0, 0, 0, 0, 1, 2, 3, 4, 5, 0], float)
    # read along each strand, so + and - regions give the same ramp downstream of the TSS
    for i in range(3):
        np.testing.assert_array_equal(tss["matrix"][i, 1], ramp)
    np.testing.assert_array_equal(adata.uns["tss"]["regions"]["reference"],
                                  [10_000, 31_049, 60_999])  # fmt: skip
    # group-level signal from obsm
    g = chipvi.tl.profile(adata, REGIONS.iloc[:1], key="lfe", upstream=0, downstream=0,
                          key_added=None)  # fmt: skip
    assert g["columns"] == ["g"] and g["matrix"][0, 0, 0] == 4.0 + 5.0  # triangle top + ramp end
    assert g["signal"] == "adata.obsm['lfe']"
    # a posterior key says what it holds (the axis label of pl.profile / pl.heatmap)
    adata.uns["chipvi_posterior"] = {"keys": {"group": {"log_fold_enrichment": "obsm/lfe"}}}
    g = chipvi.tl.profile(adata, REGIONS.iloc[:1], key="lfe", key_added=None)
    assert g["signal"] == "posterior mean ln fold enrichment (group, lfe)"


def test_profile_rejects_bad_input(tmp_path):
    adata = _adata(REGIONS.iloc[:3])
    with pytest.raises(chipvi.ChipviInputError, match="upstream must be an integer >= 0"):
        chipvi.tl.profile(adata, REGIONS, upstream=-1)
    with pytest.raises(chipvi.ChipviInputError, match="reference must be"):
        chipvi.tl.profile(adata, REGIONS, reference="summit")
    with pytest.raises(chipvi.ChipviInputError, match="no profile 'nope'"):
        chipvi.pl.profile(adata, key="nope", show=False)


def test_profile_plots_and_cli(tmp_path, capsys):
    import matplotlib

    matplotlib.use("Agg")
    adata = _adata(REGIONS.iloc[:3])
    chipvi.tl.profile(adata, REGIONS.iloc[:3], upstream=500, downstream=500)
    ax = chipvi.pl.profile(adata, show=False, save=tmp_path / "p.png")
    line = ax.get_lines()[0]
    np.testing.assert_allclose(line.get_ydata(), [0, 0, 1, 2, 3, 4, 3, 2, 1, 0, 0])
    assert "kb" in ax.get_xlabel() and "counts per million" in ax.get_ylabel()
    fig = chipvi.pl.heatmap(adata, return_fig=True, save=tmp_path / "h.png")
    shown = [a for a in fig.axes if a.axison]
    assert len(shown) == 5  # 2 profiles + 2 heatmaps + colour bar
    assert shown[-1].get_ylabel() == "counts per million (X)"
    # sorted by mean signal, highest first, and the colours span the values
    image = shown[2].images[0]
    assert image.get_array().shape == (3, 11) and image.get_clim()[1] > 0
    assert (tmp_path / "p.png").stat().st_size > 1000 and (tmp_path / "h.png").stat().st_size > 1000

    # the command line: an .h5ad and a BED of regions
    h5ad = tmp_path / "bins.h5ad"
    adata.uns.pop("chipvi_profile")
    adata.write_h5ad(h5ad)
    bed = tmp_path / "regions.bed"
    REGIONS.iloc[:3].assign(score=0)[["chrom", "start", "end", "name", "score", "strand"]].to_csv(
        bed, sep="\t", header=False, index=False
    )
    out = tmp_path / "prof"
    status = main(["plot-profile", str(h5ad), "--regions", str(bed), "--reference", "tss",
                   "--upstream", "300", "--downstream", "600", "-o", str(out)])  # fmt: skip
    assert status == 0, capsys.readouterr().err
    table = pd.read_csv(out / "profile.tsv", sep="\t", index_col=0)
    np.testing.assert_allclose(table["B"], [0, 0, 0, 0, 1, 2, 3, 4, 5, 0])
    assert list(table.index) == list(np.arange(-3, 7) * BIN)
    assert (out / "heatmap.png").is_file() and (out / "profile.png").is_file()
    assert main(["plot-profile", str(h5ad), "--regions", str(bed), "-o", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
