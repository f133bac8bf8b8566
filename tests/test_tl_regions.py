"""call_enriched_regions on q-values / probabilities stored in AnnData and on the posterior keys
of ``model.add_posterior``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import chipvi
from _analysis_data import make_adata, train_on_simulation, truth_mask, truth_posterior
from chipvi._errors import ChipviInputError
from chipvi.tl._regions import bayesian_qvalues, bh_qvalues, region_error_probability


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
    assert adata.uns["chipvi_regions"]["regions"] is regions
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
    params = adata.uns["chipvi_regions"]["params"]
    assert params["q"] == 0.05 and params["source"] == "q" and params["kind"] == "qvalue"


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
    # Ties are in or out together: the two 0.5s share the FDR of the top three, (0 + 1) / 3.
    np.testing.assert_allclose(
        bayesian_qvalues(np.array([0.5, 1.0, 0.5, 0.1])), [1 / 3, 0, 1 / 3, 0.475]
    )
    np.testing.assert_allclose(
        bh_qvalues(np.array([0.01, 0.04, 0.03, np.nan])), [0.03, 0.04, 0.04, np.nan]
    )


def test_region_errors():
    adata = make_adata()
    adata.obsm["q"] = _qframe(adata)
    with pytest.raises(
        ChipviInputError,
        match=r"no posterior record 'chipvi_posterior': run "
        r"model.add_posterior\(adata\)",
    ):
        chipvi.tl.call_enriched_regions(adata)
    with pytest.raises(ChipviInputError, match="no key 'nope'"):
        chipvi.tl.call_enriched_regions(adata, key="nope")
    with pytest.raises(ChipviInputError, match="Unknown group"):
        chipvi.tl.call_enriched_regions(adata, key="q", groups=["C"])
    with pytest.raises(ChipviInputError, match="q must be"):
        chipvi.tl.call_enriched_regions(adata, key="q", q=0)
    with pytest.raises(ChipviInputError, match="no layer"):
        chipvi.tl.call_enriched_regions(adata, key="q", level="library")
    with pytest.raises(ChipviInputError, match="takes an AnnData or a bins store, got ndarray"):
        chipvi.tl.call_enriched_regions(np.zeros(3), key="q")
    assert "chipvi_regions" not in adata.uns


def test_posterior_keys_at_and_off_the_model_threshold():
    # Group posterior N(2, 0.3) in the true blocks, N(0, 0.3) elsewhere; P(lfe > 0.5) stored.
    adata = truth_posterior(make_adata())
    regions = chipvi.tl.call_enriched_regions(adata)
    assert list(regions["n_bins"]) == [5, 2, 5, 5, 8]
    np.testing.assert_allclose(regions["signal"], np.exp(2.0), rtol=1e-6)  # fold enrichment
    assert regions["pvalue"].isna().all()
    assert adata.uns["chipvi_regions"]["params"]["source"] == "uns['chipvi_posterior']"
    # At the model's threshold the stored probability is what counts: zero it for group A.
    adata.obsm["chipvi_group_prob_enriched"]["A"] = 0.0
    with_b = chipvi.tl.call_enriched_regions(adata, key_added="at")
    assert set(with_b["group"]) == {"B"}
    # Off the threshold, P(lfe > 1) comes from the posterior mean and sd: A is back.
    off = chipvi.tl.call_enriched_regions(adata, min_lfe=1.0, key_added="off")
    assert list(off["n_bins"]) == [5, 2, 5, 5, 8]
    lib = chipvi.tl.call_enriched_regions(adata, level="library_own", groups="B_2", key_added="l")
    assert set(lib["group"]) == {"B_2"} and list(lib["n_bins"]) == [5, 8]


def test_posterior_key_missing_names_it():
    adata = truth_posterior(make_adata())
    del adata.obsm["chipvi_group_prob_enriched"]
    with pytest.raises(
        ChipviInputError,
        match=r"adata.obsm has no 'chipvi_group_prob_enriched'"
        r".*run model.add_posterior\(adata\) again",
    ):
        chipvi.tl.call_enriched_regions(adata)
    assert "chipvi_regions" not in adata.uns


def test_no_regions_gives_empty_typed_table(tmp_path):
    adata = make_adata()
    adata.obsm["q"] = pd.DataFrame({"A": 0.9, "B": 0.9}, index=adata.obs_names)
    with pytest.warns(UserWarning, match="found no region with q <= 0.05: relax q"):
        regions = chipvi.tl.call_enriched_regions(adata, key="q")
    assert regions.empty and regions["start"].dtype == np.int64
    adata.write_h5ad(tmp_path / "a.h5ad")  # uns tables survive h5ad
    chipvi.io.write_peaks(adata, tmp_path / "p.bed")
    assert (tmp_path / "p.bed").read_text() == ""


def _chr1_bin(adata, i):
    return np.flatnonzero((adata.obs["chrom"] == "chr1").to_numpy())[i]


def _broad_adata():
    """Group A only; q-values: seeds 1e-4, weak (linkable) 0.15, background 0.9."""
    adata = make_adata()
    q = np.full(adata.n_obs, 0.9)
    chr2 = np.flatnonzero((adata.obs["chrom"] == "chr2").to_numpy())
    for i in (5, 6, 8, 9, 12, 13, 30, 31, 32, 33):  # weak bins on chr1
        q[_chr1_bin(adata, i)] = 0.15
    q[_chr1_bin(adata, 7)] = 1e-4  # seed inside chr1 bins 5-9
    q[chr2[3]] = 1e-4  # lone seed on chr2
    adata.obsm["q"] = pd.DataFrame({"A": q}, index=adata.obs_names)
    return adata


def _spans(regions):
    return list(
        zip(regions["chrom"], regions["start"], regions["end"], regions["n_bins"], strict=True)
    )


def test_broad_mode_links_seeds_through_weak_bins():
    adata = _broad_adata()
    narrow = chipvi.tl.call_enriched_regions(adata, key="q", key_added="n")
    assert _spans(narrow) == [("chr1", 1400, 1600, 1), ("chr2", 600, 800, 1)]
    # Seed extended through the weak bins 5-9; the weak stretches 12-13 and 30-33 hold no seed.
    broad = chipvi.tl.call_enriched_regions(adata, key="q", broad_q=0.2, key_added="b")
    assert _spans(broad) == [("chr1", 1000, 2000, 5), ("chr2", 600, 800, 1)]
    np.testing.assert_allclose(broad["qvalue"], 4.0)  # the seed's q-value
    assert broad["summit_bin"].iloc[0] == "chr1:1400-1600"
    # A 400 bp gap links bins 12-13 to the seeded stretch; 30-33 stay out.
    linked = chipvi.tl.call_enriched_regions(
        adata, key="q", broad_q=0.2, merge_gap=400, key_added="l"
    )
    assert _spans(linked) == [("chr1", 1000, 2800, 7), ("chr2", 600, 800, 1)]
    # A weak cutoff stricter than the weak bins' q gives the narrow calls back.
    same = chipvi.tl.call_enriched_regions(adata, key="q", broad_q=0.1, key_added="s")
    assert _spans(same) == _spans(narrow)
    assert adata.uns["l"]["params"]["broad_q"] == 0.2 and "broad_q" not in adata.uns["n"]["params"]


def test_broad_regions_write_broadpeak(tmp_path):
    adata = _broad_adata()
    chipvi.tl.call_enriched_regions(adata, key="q", broad_q=0.2, merge_gap=400)
    path = chipvi.io.write_peaks(adata, tmp_path / "A.broadPeak")["all"]
    rows = [line.split("\t") for line in path.read_text().splitlines()]
    assert [r[:3] for r in rows] == [["chr1", "1000", "2800"], ["chr2", "600", "800"]]
    assert {len(r) for r in rows} == {9} and float(rows[0][8]) == 4.0


def test_region_error_probability_known_values():
    # Four bins of lfe 0.7, sd 0.2: the mean is N(0.7, 0.1), P(mean <= 0.5) = Phi(-2).
    lfe = np.array([0.7, 0.7, 0.7, 0.7, np.nan, 5.0])
    sd = np.array([0.2, 0.2, 0.2, 0.2, 0.2, 0.2])
    err = region_error_probability(np.array([0, 3, 4]), np.array([3, 4, 4]), lfe, sd, 0.5)
    np.testing.assert_allclose(err[0], 0.022750, atol=1e-6)
    # The NaN bin is left out of the mean (one bin, N(0.7, 0.2): Phi(-1)); all-NaN region -> 1.
    np.testing.assert_allclose(err[1:], [0.158655, 1.0], atol=1e-6)


def test_domain_q_tests_the_region_mean():
    adata = make_adata()
    adata.obsm["q"] = _qframe(adata, groups=("A",))  # A: chr1 bins 5-9 and 30-31, chr2 10-14
    truth = truth_mask(adata.obs, "A")
    lfe = np.where(truth, 0.7, 0.0)
    lfe[(adata.obs["chrom"] == "chr2").to_numpy() & truth] = 0.3  # chr2 block: weak on average
    adata.obsm["lfe"] = pd.DataFrame({"A": lfe}, index=adata.obs_names)
    adata.obsm["sd"] = pd.DataFrame({"A": 0.2}, index=adata.obs_names)
    kw = {"key": "q", "lfe_key": "lfe", "sd_key": "sd", "min_lfe": 0.5}
    # 5 bins of 0.7: Phi(-0.2 / (0.2 / sqrt 5)) = 0.0127; 2 bins: Phi(-1.414) = 0.0786;
    # the chr2 block's mean 0.3 is below min_lfe.
    strict = chipvi.tl.call_enriched_regions(adata, domain_q=0.05, key_added="s", **kw)
    assert _spans(strict) == [("chr1", 1000, 2000, 5)]
    loose = chipvi.tl.call_enriched_regions(adata, domain_q=0.1, key_added="l", **kw)
    assert _spans(loose) == [("chr1", 1000, 2000, 5), ("chr1", 6000, 6400, 2)]
    # Gap bins count in the region mean: a 1-bin hole of lfe -2 inside chr1 bins 5-9.
    hole = _chr1_bin(adata, 7)
    adata.obsm["q"].iloc[hole, 0] = 0.9
    adata.obsm["lfe"].iloc[hole, 0] = -2.0
    merged = chipvi.tl.call_enriched_regions(
        adata, domain_q=0.1, merge_gap=200, key_added="m", **kw
    )
    assert _spans(merged) == [("chr1", 6000, 6400, 2)]
    assert adata.uns["m"]["params"]["domain_q"] == 0.1


def test_domain_q_from_the_posterior():
    adata = truth_posterior(make_adata())
    kept = chipvi.tl.call_enriched_regions(adata, domain_q=0.05, min_lfe=1.0, key_added="k")
    assert len(kept) == 5
    # The same calls tested as regions against a threshold above the blocks' mean (2.0).
    adata.obsm["q"] = _qframe(adata)
    with pytest.warns(UserWarning, match="found no region"):
        dropped = chipvi.tl.call_enriched_regions(
            adata, key="q", lfe_key="chipvi_group_lfe", sd_key="chipvi_group_lfe_sd",
            domain_q=0.05, min_lfe=2.5, key_added="d",
        )  # fmt: skip
    assert dropped.empty
    broad = chipvi.tl.call_enriched_regions(
        adata, broad_q=0.2, merge_gap=1000, domain_q=0.05, min_lfe=1.0
    )
    # Background bins (tied, P ~ 4e-4) never pass the weak cutoff; the 4 kb gap to A's chr1
    # bins 30-31 is not bridged.
    assert list(broad["n_bins"]) == [5, 2, 5, 5, 8]


def test_broad_and_domain_errors():
    adata = _broad_adata()
    with pytest.raises(ChipviInputError, match="broad_q must be between"):
        chipvi.tl.call_enriched_regions(adata, key="q", q=0.05, broad_q=0.01)
    with pytest.raises(ChipviInputError, match="broad_q must be between"):
        chipvi.tl.call_enriched_regions(adata, key="q", broad_q=1.5)
    with pytest.raises(ChipviInputError, match="domain_q must be in"):
        chipvi.tl.call_enriched_regions(adata, key="q", domain_q=0)
    with pytest.raises(ChipviInputError, match="lfe_key= and sd_key="):
        chipvi.tl.call_enriched_regions(adata, key="q", domain_q=0.05, lfe_key="q")
    adata.obsm["other"] = pd.DataFrame({"Z": 0.0}, index=adata.obs_names)
    with pytest.raises(ChipviInputError, match="lfe_key lacks columns"):
        chipvi.tl.call_enriched_regions(
            adata, key="q", domain_q=0.05, lfe_key="other", sd_key="other"
        )
    assert "chipvi_regions" not in adata.uns


def test_broad_mode_end_to_end_on_simulated_domains(tmp_path):
    """Briefly trained model on two simulated domains: narrow and broad calls recover them."""

    from chipvi._bins import overlap_mask

    # 120 steps: with fewer, the background of this domain-heavy simulation (48 % of bins
    # enriched) has not yet settled at log fold enrichment 0.
    sim, adata, model = train_on_simulation(
        tmp_path, epochs=120, seed=3, n_chroms=1, chrom_length=200_000,
        depths=[100_000, 80_000], control_depths=80_000, peaks_per_mb=0, domains_per_mb=10,
    )  # fmt: skip
    truth = sim.truth["enriched_G1"].to_numpy()
    hits = {}
    model.add_posterior(adata)
    # Bayesian FDR at q spends up to a fraction q of the calls on bins of low posterior
    # probability, so precision >= 0.95 at q = 0.05 would ask for better than the nominal
    # rate; at q = 0.01 it leaves room for the simulator's GC bias, which the model's
    # covariates do not include.
    for label, kw in {"narrow": {"q": 0.01}, "broad": {"broad_q": 0.2, "domain_q": 0.05}}.items():
        regions = chipvi.tl.call_enriched_regions(adata, merge_gap=1000, key_added=label, **kw)
        called = overlap_mask(adata, regions["chrom"], regions["start"], regions["end"])
        assert (called & truth).sum() >= 0.95 * called.sum()  # precision
        hits[label] = (called & truth).sum()
    # The chain's posterior already spans the domains, so narrow calls recover them too.
    assert min(hits.values()) > 0.8 * truth.sum(), (hits, truth.sum())
    paths = chipvi.io.write_peaks(adata, tmp_path / "peaks", key="broad", format="broadPeak")
    assert paths["G1"].read_text().count("\n") == len(adata.uns["broad"]["regions"])
