"""Tests of chipvi.pp: aggregate_bins, filter_blacklist, filter_chroms."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from chipvi import ChipviInputError
from chipvi._bins import bin_obs
from chipvi.pp import aggregate_bins, filter_blacklist, filter_chroms, filter_region

SIZES = {"chr1": 1030, "chr2": 460, "chrM": 70}


def make_adata(bin_size: int = 25, sizes=SIZES, seed: int = 0) -> ad.AnnData:
    """Contract-layout AnnData with random counts (many zeros) and per-bin mean MAPQ."""
    rng = np.random.default_rng(seed)
    obs = bin_obs(list(sizes.items()), bin_size)
    n = len(obs)

    def counts():
        return (rng.poisson(1.5, (n, 3)) * (rng.random((n, 3)) < 0.7)).astype(np.int32)

    def mapq(c):
        return np.where(c > 0, rng.uniform(0, 60, c.shape), 0).astype(np.float32)

    x, control = counts(), counts()
    var = pd.DataFrame(
        {"sample": ["a", "b", "c"], "group": ["g1", "g1", "g2"]}, index=["a", "b", "c"]
    )
    return ad.AnnData(
        X=x,
        obs=obs,
        var=var,
        layers={"mapq": mapq(x), "control": control, "control_mapq": mapq(control)},
        uns={"chipvi": {"bin_size": bin_size, "chrom_sizes": dict(sizes), "min_mapq": 0}},
    )


def _reference_aggregate(adata: ad.AnnData, new_size: int):
    """Obviously-correct loop: every new bin sums the old bins starting inside it."""
    rows = []
    for chrom, length in adata.uns["chipvi"]["chrom_sizes"].items():
        for s in range(0, length, new_size):
            e = min(s + new_size, length)
            sel = (
                (adata.obs["chrom"] == chrom).to_numpy()
                & (adata.obs["start"] >= s).to_numpy()
                & (adata.obs["start"] < e).to_numpy()
            )
            out = {"name": f"{chrom}:{s}-{e}"}
            for count_key, mapq_key in ((None, "mapq"), ("control", "control_mapq")):
                c = (adata.X if count_key is None else adata.layers[count_key])[sel]
                m = adata.layers[mapq_key][sel]
                total = c.sum(axis=0)
                weighted = (c.astype(np.float64) * m).sum(axis=0)
                out[count_key or "X"] = total
                out[mapq_key] = np.where(total > 0, weighted / np.maximum(total, 1), 0)
            rows.append(out)
    return rows


@pytest.mark.parametrize("new_size", [25, 50, 200, 275, 1000, 5000])
def test_aggregate_matches_reference(new_size):
    adata = make_adata()
    out = aggregate_bins(adata, new_size, copy=True)
    ref = _reference_aggregate(adata, new_size)
    assert list(out.obs_names) == [r["name"] for r in ref]
    np.testing.assert_array_equal(out.X, np.array([r["X"] for r in ref]))
    np.testing.assert_array_equal(out.layers["control"], np.array([r["control"] for r in ref]))
    for key in ("mapq", "control_mapq"):
        np.testing.assert_allclose(out.layers[key], np.array([r[key] for r in ref]), rtol=1e-5)
    assert out.X.dtype == np.int32 and out.layers["control"].dtype == np.int32
    assert out.layers["mapq"].dtype == np.float32
    # Totals conserved; chromosome-end partial bins end at the chromosome end.
    np.testing.assert_array_equal(out.X.sum(axis=0), adata.X.sum(axis=0))
    ends = out.obs.groupby("chrom", observed=True)["end"].max().to_dict()
    assert ends == SIZES
    assert list(out.obs["chrom"].cat.categories) == list(SIZES)
    assert out.obs["start"].dtype == np.int64 and out.obs["end"].dtype == np.int64
    assert out.uns["chipvi"]["bin_size"] == new_size
    assert out.uns["chipvi"]["aggregated_from"] == 25
    pd.testing.assert_frame_equal(out.var, adata.var)


def test_aggregate_partial_last_bin_example():
    adata = make_adata(sizes={"c": 130}, bin_size=50)  # bins 0-50, 50-100, 100-130
    adata.X[:] = np.array([[1, 0, 2], [3, 0, 0], [5, 0, 1]])
    adata.layers["mapq"][:] = np.array([[10, 0, 60], [30, 0, 0], [60, 0, 0]])
    out = aggregate_bins(adata, 100, copy=True)
    assert list(out.obs_names) == ["c:0-100", "c:100-130"]
    np.testing.assert_array_equal(out.X, [[4, 0, 2], [5, 0, 1]])
    np.testing.assert_allclose(out.layers["mapq"], [[25, 0, 60], [60, 0, 0]])


def test_aggregate_in_place_and_copy_semantics():
    adata = make_adata()
    original = adata.copy()
    result = aggregate_bins(adata, 200, copy=True)
    assert adata.n_obs == original.n_obs and adata.uns["chipvi"]["bin_size"] == 25
    np.testing.assert_array_equal(adata.X, original.X)
    assert aggregate_bins(adata, 200) is None
    assert adata.n_obs == result.n_obs and adata.uns["chipvi"]["bin_size"] == 200
    np.testing.assert_array_equal(adata.X, result.X)
    np.testing.assert_array_equal(adata.layers["control_mapq"], result.layers["control_mapq"])
    # Chained: 25 -> 200 -> 400 equals 25 -> 400 directly.
    aggregate_bins(adata, 400)
    direct = aggregate_bins(original, 400, copy=True)
    np.testing.assert_array_equal(adata.X, direct.X)
    np.testing.assert_allclose(adata.layers["mapq"], direct.layers["mapq"], rtol=1e-5)


def test_aggregate_drops_other_layers_with_warning():
    adata = make_adata()
    adata.layers["denoised"] = np.ones(adata.shape, np.float32)
    adata.obsm["pos"] = np.zeros((adata.n_obs, 2))
    with pytest.warns(UserWarning, match="denoised.*obsm\\['pos'\\]"):
        out = aggregate_bins(adata, 100, copy=True)
    assert set(out.layers) == {"mapq", "control", "control_mapq"} and not out.obsm


def test_aggregate_without_control_layers():
    adata = make_adata()
    for key in ("control", "control_mapq"):
        del adata.layers[key]
    out = aggregate_bins(adata, 100, copy=True)
    assert set(out.layers) == {"mapq"}
    np.testing.assert_array_equal(out.X.sum(axis=0), adata.X.sum(axis=0))


@pytest.mark.parametrize(
    ("bin_size", "match"),
    [
        (0, "bin_size must be >= 1, got 0"),
        (-200, "bin_size must be >= 1, got -200"),
        (2.5, "bin_size must be an integer, got 2.5"),
        ("200", "bin_size must be an integer, got '200'"),
        (True, "bin_size must be an integer, got True"),
        (30, "not a multiple of the current bin size 25"),
    ],
)
def test_aggregate_bad_bin_size(bin_size, match):
    adata = make_adata()
    with pytest.raises(ChipviInputError, match=match):
        aggregate_bins(adata, bin_size)
    assert adata.uns["chipvi"]["bin_size"] == 25 and adata.n_obs == len(bin_obs(SIZES.items(), 25))


def test_aggregate_needs_full_tiling_and_chipvi_uns():
    adata = make_adata()
    filter_blacklist(adata, pd.DataFrame({"chrom": ["chr1"], "start": [100], "end": [120]}))
    with pytest.raises(ChipviInputError, match="before filter_blacklist"):
        aggregate_bins(adata, 100)
    bare = ad.AnnData(np.zeros((3, 2), np.int32))
    with pytest.raises(ChipviInputError, match="uns\\['chipvi'\\]"):
        aggregate_bins(bare, 100)


def test_aggregate_after_filter_chroms():
    adata = make_adata()
    filter_chroms(adata, keep=["chr2"])
    out = aggregate_bins(adata, 100, copy=True)
    assert list(out.obs_names) == ["chr2:0-100", "chr2:100-200", "chr2:200-300"] + [
        "chr2:300-400",
        "chr2:400-460",
    ]
    np.testing.assert_array_equal(out.X.sum(axis=0), adata.X.sum(axis=0))


def test_aggregate_over_a_cropped_region_matches_the_whole_genome_sums():
    adata = make_adata()
    whole = aggregate_bins(adata, 100, copy=True)
    crop = filter_region(adata, "chr1:130-980", copy=True)  # 25 bp bins 125-150 ... 975-1000
    out = aggregate_bins(crop, 100, copy=True)
    # Edge bins are cut to the crop, inner ones are the whole-genome bins.
    assert out.obs_names[0] == "chr1:125-200" and out.obs_names[-1] == "chr1:900-1000"
    assert out.n_obs == 9
    inner = out.obs_names[1:]
    np.testing.assert_array_equal(out[inner].X, whole[inner].X)
    np.testing.assert_allclose(out[inner].layers["mapq"], whole[inner].layers["mapq"], rtol=1e-6)
    np.testing.assert_array_equal(out.X[0], crop.X[:3].sum(axis=0))
    assert (out.obs["end"] - out.obs["start"]).tolist() == [75] + [100] * 8
    assert list(out.obs["chrom"].cat.categories) == list(SIZES)


def test_aggregate_refuses_reordered_or_gapped_bins():
    adata = make_adata()
    order = np.r_[np.arange(50, adata.n_obs), np.arange(50)]  # chr1's first bins moved last
    with pytest.raises(ChipviInputError, match="bins were removed or reordered"):
        aggregate_bins(adata[order].copy(), 100)
    gap = np.ones(adata.n_obs, bool)
    gap[10] = False  # one bin missing inside chr1
    with pytest.raises(ChipviInputError, match="gap-free run"):
        aggregate_bins(adata[gap].copy(), 100)


# ---------------------------------------------------------------- filter_blacklist


def test_filter_blacklist_from_file(tmp_path):
    adata = make_adata()
    bed = tmp_path / "black.bed"
    bed.write_text("chr1\t90\t160\nchr2\t0\t1\nchrUn\t0\t500\nchr1\t1000\t1030\n")
    original = adata.copy()
    out = filter_blacklist(adata, bed, copy=True)
    starts = out.obs.loc[out.obs["chrom"] == "chr1", "start"].to_numpy()
    # 90-160 hits the 25-bp bins starting 75, 100, 125, 150; 1000-1030 hits 1000, 1025.
    removed_chr1 = {75, 100, 125, 150, 1000, 1025}
    assert removed_chr1.isdisjoint(starts)
    assert len(starts) + len(removed_chr1) == len(bin_obs([("chr1", 1030)], 25))
    assert "chr2:0-25" not in out.obs_names
    assert out.n_obs == original.n_obs - 7
    # Remaining rows carry their own data, in order.
    kept = original.obs_names.isin(out.obs_names)
    np.testing.assert_array_equal(out.X, original.X[kept])
    np.testing.assert_array_equal(out.layers["control_mapq"], original.layers["control_mapq"][kept])
    record = out.uns["chipvi"]["filter_blacklist"]
    assert record["n_bins_removed"] == 7 and record["n_intervals"] == 4
    assert record["bins_removed_by_chrom"] == {"chr1": 6, "chr2": 1}
    assert record["bp_removed"] == 5 * 25 + 5 + 25
    assert record["bed"] == str(bed.resolve())
    # copy=True left the input alone; in place gives the same result.
    assert adata.n_obs == original.n_obs
    assert filter_blacklist(adata, bed) is None
    assert list(adata.obs_names) == list(out.obs_names)
    # The record survives h5ad.
    adata.write_h5ad(tmp_path / "a.h5ad")
    back = ad.read_h5ad(tmp_path / "a.h5ad")
    assert int(back.uns["chipvi"]["filter_blacklist"]["n_bins_removed"]) == 7


def test_filter_blacklist_repeated_calls_accumulate():
    adata = make_adata()
    filter_blacklist(adata, pd.DataFrame({"chrom": ["chr1"], "start": [0], "end": [50]}))
    filter_blacklist(adata, pd.DataFrame({"chrom": ["chr2"], "start": [0], "end": [25]}))
    record = adata.uns["chipvi"]["filter_blacklist"]
    assert record["n_bins_removed"] == 3
    assert record["bins_removed_by_chrom"] == {"chr1": 2, "chr2": 1}


def test_filter_blacklist_bad_input_leaves_adata_untouched(tmp_path):
    adata = make_adata()
    n = adata.n_obs
    bad = tmp_path / "bad.bed"
    bad.write_text("chr1\t10\n")
    with pytest.raises(ChipviInputError, match="bad.bed, line 1"):
        filter_blacklist(adata, bad)
    with pytest.raises(ChipviInputError, match="does not exist"):
        filter_blacklist(adata, tmp_path / "missing.bed")
    with pytest.raises(ChipviInputError, match="lacks columns"):
        filter_blacklist(adata, pd.DataFrame({"chrom": ["chr1"], "begin": [0]}))
    with pytest.raises(ChipviInputError, match="BED file path or a DataFrame"):
        filter_blacklist(adata, 42)
    everything = pd.DataFrame({"chrom": list(SIZES), "start": [0] * 3, "end": list(SIZES.values())})
    with pytest.raises(ChipviInputError, match="covers every bin"):
        filter_blacklist(adata, everything)
    assert adata.n_obs == n and "filter_blacklist" not in adata.uns["chipvi"]


# ---------------------------------------------------------------- filter_chroms


def test_filter_chroms_default_drops_chrM():
    adata = make_adata()
    out = filter_chroms(adata, copy=True)
    assert list(out.obs["chrom"].cat.categories) == ["chr1", "chr2"]
    assert set(out.obs["chrom"]) == {"chr1", "chr2"}
    assert out.uns["chipvi"]["chrom_sizes"] == {"chr1": 1030, "chr2": 460}
    assert list(out.uns["chipvi"]["filter_chroms"]["removed"]) == ["chrM"]
    kept = (adata.obs["chrom"] != "chrM").to_numpy()
    np.testing.assert_array_equal(out.X, adata.X[kept])
    assert adata.uns["chipvi"]["chrom_sizes"] == SIZES  # copy left the input alone


def test_filter_chroms_keep_in_place_and_header_order(tmp_path):
    adata = make_adata()
    assert filter_chroms(adata, keep=["chr2", "chr1"]) is None
    assert list(adata.obs["chrom"].cat.categories) == ["chr1", "chr2"]  # header order
    assert adata.n_obs == len(bin_obs([("chr1", 1030), ("chr2", 460)], 25))
    filter_chroms(adata, keep="chr2")
    assert list(adata.uns["chipvi"]["filter_chroms"]["removed"]) == ["chrM", "chr1"]
    assert adata.obs_names[0] == "chr2:0-25"
    adata.write_h5ad(tmp_path / "a.h5ad")
    assert list(ad.read_h5ad(tmp_path / "a.h5ad").uns["chipvi"]["filter_chroms"]["removed"]) == [
        "chrM",
        "chr1",
    ]


def test_filter_chroms_explicit_keep_beats_default_drop():
    out = filter_chroms(make_adata(), keep=["chrM"], copy=True)
    assert list(out.obs["chrom"].cat.categories) == ["chrM"]
    assert out.uns["chipvi"]["chrom_sizes"] == {"chrM": 70}


def test_filter_chroms_drop_absent_default_names_is_fine():
    adata = make_adata(sizes={"chr1": 500, "chr2": 300})
    out = filter_chroms(adata, copy=True)
    assert out.n_obs == adata.n_obs


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"keep": ["chr1", "chr9"]}, r"\['chr9'\] do not exist"),
        ({"drop": ["chrY"]}, r"\['chrY'\] do not exist"),
        ({"keep": ["chr1"], "drop": ["chr1"]}, "both keep and drop"),
        ({"drop": ["chr1", "chr2", "chrM"]}, "remove every chromosome"),
    ],
)
def test_filter_chroms_bad_input(kwargs, match):
    adata = make_adata()
    with pytest.raises(ChipviInputError, match=match):
        filter_chroms(adata, **kwargs)
    assert adata.uns["chipvi"]["chrom_sizes"] == SIZES


def test_in_place_on_a_view_leaves_the_parent_alone():
    parent = make_adata()
    n = parent.n_obs
    view = parent[:, :2]
    aggregate_bins(view, 100)
    assert not view.is_view and view.shape == (len(bin_obs(SIZES.items(), 100)), 2)
    view = parent[:60]
    filter_chroms(view, keep="chr1")
    assert view.n_obs == len(bin_obs([("chr1", 1030)], 25))
    assert parent.n_obs == n and parent.uns["chipvi"]["chrom_sizes"] == SIZES


def test_filter_region_keeps_overlapping_bins():
    adata = make_adata(bin_size=25)
    chrom = str(adata.obs["chrom"].iloc[0])
    out = filter_region(adata, f"{chrom}:510-600", copy=True)
    # bins [500,525) ... [575,600): 510 falls inside the first, 600 is exclusive
    assert out.obs["start"].tolist() == [500, 525, 550, 575]
    assert (out.obs["chrom"].astype(str) == chrom).all()
    assert out.uns["chipvi"]["filter_region"] == f"{chrom}:510-600"
    np.testing.assert_array_equal(out.X, adata[out.obs_names].X)
    n = adata.n_obs
    assert filter_region(adata, chrom) is None  # in place, whole chromosome
    assert 0 < adata.n_obs < n


@pytest.mark.parametrize(
    "region, match",
    [
        ("chrZ:1-100", "not in the data"),
        ("chr1:100-50", "end must be greater"),
        ("chr1:1-999999999", "lies outside"),
        ("chr1:a-b", "does not parse"),
    ],
)
def test_filter_region_bad_input(region, match):
    adata = make_adata()
    with pytest.raises(ChipviInputError, match=match):
        filter_region(adata, region)
