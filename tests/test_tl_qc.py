"""QC: replicate concordance, fingerprint metrics, FRiP and strand cross-correlation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import chipvi
from _analysis_data import ENRICHED, make_adata, truth_mask, write_fragment_bam
from chipvi._errors import ChipviInputError
from chipvi.tl._qc import fingerprint_curve, fingerprint_metrics


def test_replicate_concordance_raw_and_denoised():
    adata = make_adata()
    truth = np.column_stack([truth_mask(adata.obs, g) for g in adata.var["group"]]).astype(float)
    rng = np.random.default_rng(3)
    adata.layers["den"] = truth * 2 + rng.normal(0, 0.01, size=truth.shape)
    table = chipvi.tl.replicate_concordance(adata, denoised="den", top_k=12)
    assert list(table["group"]) == ["A", "B"]
    assert list(table.columns[:3]) == ["group", "library_1", "library_2"]
    a = table.iloc[0]
    x = np.log1p(adata.X[:, 0] * 1e6 / adata.var["depth"].iloc[0])
    y = np.log1p(adata.X[:, 1] * 1e6 / adata.var["depth"].iloc[1])
    assert a["pearson_raw"] == pytest.approx(np.corrcoef(x, y)[0, 1])
    # Denoised: the 12 enriched bins of group A are the top 12 in both replicates.
    assert a["jaccard_denoised"] == 1.0
    assert a["pearson_denoised"] > 0.99 > a["pearson_raw"]
    stored = adata.uns["chipvi_concordance"]
    assert stored["table"] is table
    assert stored["params"] == {"denoised": "den", "groups": ["A", "B"], "top_k": 12}


def test_replicate_concordance_jaccard_by_hand_and_errors():
    adata = make_adata()
    adata.layers["den"] = np.zeros(adata.shape)
    adata.layers["den"][[0, 1, 2], 0] = [3, 2, 1]
    adata.layers["den"][[0, 1, 5], 1] = [3, 2, 1]
    t = chipvi.tl.replicate_concordance(adata, denoised="den", top_k=3, groups="A", key_added=None)
    assert t["jaccard_denoised"].iloc[0] == pytest.approx(2 / 4)
    with pytest.raises(ChipviInputError, match="Unknown group"):
        chipvi.tl.replicate_concordance(adata, groups=["Z"])
    with pytest.raises(ChipviInputError, match="top_k"):
        chipvi.tl.replicate_concordance(adata, top_k=0)
    with pytest.raises(ChipviInputError, match="no layer"):
        chipvi.tl.replicate_concordance(adata, denoised="nope")
    single = adata[:, [0, 2]].copy()
    with pytest.raises(ChipviInputError, match="replicates"):
        chipvi.tl.replicate_concordance(single)


def test_fingerprint_metrics_by_hand():
    m = fingerprint_metrics(np.array([0, 0, 1, 3]))
    np.testing.assert_allclose(fingerprint_curve([3, 0, 1, 0]), [0, 0, 0.25, 1])
    assert m["auc"] == pytest.approx(0.3125)
    assert m["x_intercept"] == pytest.approx(0.75)
    assert m["elbow_point"] == pytest.approx(0.75)
    assert np.isnan(m["js_distance"])
    # CHANCE: chip sorted [0,0,1,3], control [1,1,1,1]: largest gap after 2 bins.
    c = fingerprint_metrics(np.array([0, 0, 1, 3]), np.array([1, 1, 1, 1]))
    assert c["pct_genome_enriched"] == pytest.approx(100 * (4 - 1) / 4)
    assert c["diff_enrichment"] == pytest.approx(50.0)


def test_fingerprint_separates_enriched_from_uniform():
    rng = np.random.default_rng(0)
    n = 20_000
    uniform = rng.poisson(5, n)
    enriched = rng.poisson(np.where(rng.random(n) < 0.05, 60, 2))
    mu = fingerprint_metrics(uniform, rng.poisson(5, n))
    me = fingerprint_metrics(enriched, rng.poisson(5, n))
    # deepTools' synthetic AUC counts each tied count block at its upper end, so even a Poisson
    # sample sits below it; the enriched library is much further away.
    assert abs(me["auc"] - me["synthetic_auc"]) > 3 * abs(mu["auc"] - mu["synthetic_auc"])
    assert mu["elbow_point"] == pytest.approx(mu["synthetic_elbow_point"], abs=0.02)
    assert mu["synthetic_js_distance"] < 0.05 < me["synthetic_js_distance"]
    assert me["js_distance"] > 3 * mu["js_distance"]
    assert me["auc"] < mu["auc"] and me["elbow_point"] > mu["elbow_point"]
    assert me["diff_enrichment"] > mu["diff_enrichment"]


def test_fingerprint_on_adata():
    adata = make_adata()
    metrics = chipvi.tl.fingerprint(adata, n_points=50)
    assert list(metrics.index) == list(adata.var_names)
    curve = adata.uns["chipvi_fingerprint"]["curve"]
    assert len(curve) == 50 and curve["A_1"].iloc[-1] == pytest.approx(1.0)
    assert "A_1:control" in curve and np.all(np.diff(curve["A_1"]) >= 0)
    assert metrics["js_distance"].notna().all()
    nocontrol = chipvi.tl.fingerprint(adata, control_layer=None, samples=["B_1"], key_added=None)
    assert nocontrol["js_distance"].isna().all() and list(nocontrol.index) == ["B_1"]
    with pytest.raises(ChipviInputError, match="no column"):
        chipvi.tl.fingerprint(adata, samples=["nope"])


def test_frip_own_group_regions(tmp_path):
    adata = make_adata()
    rows = []
    for g, blocks in ENRICHED.items():
        for chrom, first, last in blocks:
            rows.append((chrom, first * 200 + 50, last * 200 + 100, g))  # partial bin overlaps
    regions = pd.DataFrame(rows, columns=["chrom", "start", "end", "group"])
    got = chipvi.tl.frip(adata, regions)
    for j, lib in enumerate(adata.var_names):
        mask = truth_mask(adata.obs, adata.var["group"].iloc[j])
        assert got[lib] == pytest.approx(adata.X[mask, j].sum() / adata.X[:, j].sum())
    assert np.allclose(adata.var["chipvi_frip"], got.to_numpy())
    assert adata.uns["chipvi_frip"]["params"] == {"n_regions": 5, "per_group": True}
    bed = tmp_path / "r.bed"
    bed.write_text("track name=x\nchr1\t1000\t1200\nchr9\t0\t100\n")
    pooled = chipvi.tl.frip(adata, bed, key_added=None)
    np.testing.assert_allclose(pooled, adata.X[5] / adata.X.sum(axis=0))
    bed.write_text("chr1\tx\t5\n")
    with pytest.raises(ChipviInputError, match="line 1: start and end must be integers"):
        chipvi.tl.frip(adata, bed)
    with pytest.raises(ChipviInputError, match="does not exist"):
        chipvi.tl.frip(adata, tmp_path / "none.bed")


def test_strand_cross_correlation_finds_fragment_length(tmp_path):
    bam = write_fragment_bam(tmp_path / "chip.bam", frag_len=180, read_len=50)
    flat = write_fragment_bam(tmp_path / "flat.bam", n_peaks=0, seed=1)
    m = chipvi.tl.strand_cross_correlation([bam, flat], max_shift=600)
    chip = m.loc["chip"]
    assert chip["read_length"] == 50 and chip["n_reads"] == 40 * 150 + 30_000
    # + and - 5' ends of a fragment are 179 bp apart; peak width makes the maximum a bit flat.
    assert abs(chip["fragment_length"] - 179) <= 10
    assert chip["nsc"] > 1.05 and chip["rsc"] > 1 and chip["quality_tag"] == 2
    assert chip["nsc"] > 3 * m.loc["flat", "nsc"]
    adata = make_adata()
    adata.var["bam"] = str(bam)
    chipvi.tl.strand_cross_correlation(adata, max_shift=400)
    assert abs(adata.var["chipvi_fragment_length"].iloc[0] - 179) <= 10
    stored = adata.uns["chipvi_strand_cc"]
    assert stored["curve"].shape == (401, 5) and stored["params"]["max_shift"] == 400
    # An unindexed copy (QC after `chipvi bin --index`) is read in one pass: same numbers.
    unindexed = tmp_path / "copy.bam"
    unindexed.write_bytes(bam.read_bytes())
    again = chipvi.tl.strand_cross_correlation(unindexed, max_shift=600)
    pd.testing.assert_series_equal(again.loc["copy"], chip, check_names=False)
    with pytest.raises(ChipviInputError, match="does not exist"):
        chipvi.tl.strand_cross_correlation(tmp_path / "missing.bam")
    with pytest.raises(ChipviInputError, match="no chromosome"):
        chipvi.tl.strand_cross_correlation(bam, chroms=["chrZ"])


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    sim = chipvi.datasets.simulate(
        tmp_path_factory.mktemp("sim"), seed=2, n_chroms=1, chrom_length=100_000,
        depths=[40_000, 20_000], control_depths=[20_000, 10_000], fragment_length=200,
    )  # fmt: skip
    return sim, chipvi.read_bams(sim.samplesheet, progress=False)


def test_qc_on_simulated_bams(simulated):
    sim, adata = simulated
    m = chipvi.tl.strand_cross_correlation(adata, max_shift=400)
    deep = m.loc[adata.var_names[0]]
    # Simulated fragments are 200 ± 25 bp; the deeper library estimates it within 25 bp.
    assert abs(deep["fragment_length"] - 200) <= 25 and deep["read_length"] == 50
    assert (m["nsc"] > 1.05).all()
    fp = chipvi.tl.fingerprint(adata)
    # ChIP is more concentrated than its input: higher JS distance to the synthetic sample.
    assert (fp["js_distance"] > 0).all()
    truth = sim.truth["enriched_G1"].to_numpy()
    regions = sim.truth.loc[truth, ["chrom", "start", "end"]]
    frip = chipvi.tl.frip(adata, regions)
    share_bins = truth.mean()
    assert (frip > 2 * share_bins).all()


def test_qc_on_bundled_data():
    adata = chipvi.datasets.cssq_chr19()
    adata = adata[(adata.obs["start"] >= 1_230_000) & (adata.obs["end"] <= 1_410_000)].copy()
    table = chipvi.tl.replicate_concordance(adata, top_k=50)
    assert list(table["group"]) == ["HESC", "HSMM"]
    assert (table["pearson_raw"] > 0.3).all() and (table["jaccard_raw"] > 0).all()
    fp = chipvi.tl.fingerprint(adata)
    assert fp["js_distance"].notna().all() and (fp["auc"] < fp["synthetic_auc"]).all()
