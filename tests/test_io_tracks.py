"""bigWig / bedGraph / peak writers: round trips through pyBigWig and the text formats."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyBigWig
import pytest

from _analysis_data import CHROM_SIZES, make_adata
from chipvi._errors import ChipviInputError
from chipvi.io._bigwig import read_bigwig_bins, write_bedgraph, write_bigwig
from chipvi.io._peaks import write_peaks


@pytest.fixture
def adata():
    a = make_adata()
    a.layers["lfe"] = np.log1p(a.X).astype(np.float32) - 1.5
    a.obsm["group_lfe"] = pd.DataFrame(
        {"A": np.linspace(-1, 1, a.n_obs), "B": np.linspace(2, 3, a.n_obs)}, index=a.obs_names
    )
    return a


def _intervals(path, chrom):
    bw = pyBigWig.open(str(path))
    try:
        return bw.chroms(), np.asarray(bw.intervals(chrom), dtype=float)
    finally:
        bw.close()


def test_bigwig_per_library_reads_back_identically(adata, tmp_path):
    paths = write_bigwig(adata, tmp_path / "tracks", layer="lfe")
    assert sorted(paths) == sorted(adata.var_names)
    header, iv = _intervals(paths["A_2"], "chr1")
    assert header == CHROM_SIZES
    on1 = (adata.obs["chrom"] == "chr1").to_numpy()
    np.testing.assert_array_equal(iv[:, 0], adata.obs["start"].to_numpy()[on1])
    np.testing.assert_array_equal(iv[:, 1], adata.obs["end"].to_numpy()[on1])
    np.testing.assert_allclose(iv[:, 2], adata.layers["lfe"][on1, 1], rtol=1e-6)
    back = read_bigwig_bins(paths, adata)
    np.testing.assert_allclose(back.to_numpy(), adata.layers["lfe"], rtol=1e-6)
    assert list(back.index) == list(adata.obs_names)


def test_bigwig_group_level_and_single_file(adata, tmp_path):
    paths = write_bigwig(adata, tmp_path / "B.bw", key="group_lfe", samples="B")
    assert paths == {"B": tmp_path / "B.bw"}
    back = read_bigwig_bins(tmp_path / "B.bw", adata)
    np.testing.assert_allclose(back["B"], adata.obsm["group_lfe"]["B"], rtol=1e-6)
    with pytest.raises(ChipviInputError, match="single file but 2 tracks"):
        write_bigwig(adata, tmp_path / "both.bw", key="group_lfe")


def test_bigwig_sorts_shuffled_bins_and_skips_nan(adata, tmp_path):
    rng = np.random.default_rng(1)
    shuffled = adata[rng.permutation(adata.n_obs)].copy()
    values = shuffled.layers["lfe"].copy()
    values[:7, 0] = np.nan
    shuffled.layers["lfe"] = values
    paths = write_bigwig(shuffled, tmp_path, layer="lfe", samples=["A_1"])
    _, iv1 = _intervals(paths["A_1"], "chr1")
    _, iv2 = _intervals(paths["A_1"], "chr2")
    iv = np.vstack([iv1, iv2])
    assert len(iv) == adata.n_obs - 7
    assert np.all(np.diff(iv1[:, 0]) > 0) and np.all(iv1[1:, 0] >= iv1[:-1, 1])
    back = read_bigwig_bins(paths["A_1"], shuffled)["A_1"].to_numpy()
    assert np.isnan(back[:7]).all()
    np.testing.assert_allclose(back[7:], values[7:, 0], rtol=1e-6)
    with pytest.raises(ChipviInputError, match="NaN"):
        write_bigwig(shuffled, tmp_path / "x", layer="lfe", nan="error")
    zero = write_bigwig(shuffled, tmp_path / "z", layer="lfe", samples="A_1", nan="zero")
    assert np.all(read_bigwig_bins(zero["A_1"], shuffled)["A_1"].to_numpy()[:7] == 0)


def test_bigwig_refuses_existing_and_bad_input(adata, tmp_path):
    write_bigwig(adata, tmp_path, samples="A_1")
    before = (tmp_path / "A_1.bw").read_bytes()
    with pytest.raises(ChipviInputError, match="already exists"):
        write_bigwig(adata, tmp_path)
    assert not (tmp_path / "A_2.bw").exists()  # nothing written when one target exists
    write_bigwig(adata, tmp_path, layer="lfe", samples="A_1", overwrite=True)
    assert (tmp_path / "A_1.bw").read_bytes() != before
    with pytest.raises(ChipviInputError, match="no layer 'nope'"):
        write_bigwig(adata, tmp_path / "o", layer="nope")
    with pytest.raises(ChipviInputError, match="no key 'nope'"):
        write_bigwig(adata, tmp_path / "o", key="nope")
    with pytest.raises(ChipviInputError, match="no column"):
        write_bigwig(adata, tmp_path / "o", samples="C_9")
    bad = adata.copy()
    bad.obs.loc[bad.obs_names[-1], "end"] = CHROM_SIZES["chr2"] + 5
    with pytest.raises(ChipviInputError, match="outside its chromosome"):
        write_bigwig(bad, tmp_path / "o")
    no_sizes = adata.copy()
    del no_sizes.uns["chipvi"]["chrom_sizes"]
    with pytest.raises(ChipviInputError, match="chrom_sizes"):
        write_bigwig(no_sizes, tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_read_bigwig_bins_weights_partial_coverage(adata, tmp_path):
    path = tmp_path / "t.bw"
    bw = pyBigWig.open(str(path), "w")
    bw.addHeader(list(CHROM_SIZES.items()))
    bw.addEntries(["chr1", "chr1"], [0, 150], ends=[50, 250], values=[2.0, 6.0])
    bw.close()
    got = read_bigwig_bins({"t": path}, adata)["t"]
    # bin 0-200: 50 bp at 2, 50 bp at 6 -> 4; bin 200-400: 50 bp at 6; bin 400-600: nothing
    assert got.iloc[0] == pytest.approx(4.0)
    assert got.iloc[1] == pytest.approx(6.0)
    assert np.isnan(got.iloc[2])
    assert got[adata.obs["chrom"] == "chr2"].isna().all()
    with pytest.raises(ChipviInputError, match="does not exist"):
        read_bigwig_bins(tmp_path / "missing.bw", adata)


def test_bedgraph_lines(adata, tmp_path):
    paths = write_bedgraph(adata, tmp_path / "bg", layer="lfe", samples=["B_1"])
    table = pd.read_csv(paths["B_1"], sep="\t", header=None)
    assert paths["B_1"].name == "B_1.bedGraph"
    assert len(table) == adata.n_obs
    assert table.iloc[-1, 0] == "chr2" and table.iloc[-1, 2] == CHROM_SIZES["chr2"]
    np.testing.assert_allclose(table[3], adata.layers["lfe"][:, 2], rtol=1e-5, atol=1e-6)
    with pytest.raises(ChipviInputError, match="already exists"):
        write_bedgraph(adata, tmp_path / "bg", layer="lfe", samples=["B_1"])


@pytest.fixture
def regions():
    return pd.DataFrame(
        {
            "chrom": ["chr2", "chr1", "chr1"],
            "start": [2000, 1000, 6000],
            "end": [3000, 2000, 6400],
            "name": ["A_region_3", "A_region_1", "B_region_1"],
            "group": ["A", "A", "B"],
            "score": [1500.0, 37.4, 12],
            "signal": [5.5, 3.25, 2.0],
            "pvalue": [8.0, np.nan, 3.0],
            "qvalue": [6.0, 2.5, 1.2],
            "summit": [500, 100, 300],
        }
    )


def test_write_narrowpeak_broadpeak_bed(regions, tmp_path):
    out = write_peaks(regions, tmp_path / "all.narrowPeak")
    lines = (tmp_path / "all.narrowPeak").read_text().splitlines()
    assert out == {"all": tmp_path / "all.narrowPeak"}
    assert [len(line.split("\t")) for line in lines] == [10, 10, 10]
    first = lines[0].split("\t")  # sorted: natural chromosome order, then start
    assert first == ["chr1", "1000", "2000", "A_region_1", "37", ".", "3.25", "-1", "2.5", "100"]
    assert lines[2].split("\t")[4] == "1000"  # score clipped to the 0-1000 range
    write_peaks(regions, tmp_path / "b.broadPeak")
    assert all(len(x.split("\t")) == 9 for x in (tmp_path / "b.broadPeak").read_text().splitlines())
    per_group = write_peaks(regions, tmp_path / "bed", format="bed")
    assert sorted(per_group) == ["A", "B"]
    assert (tmp_path / "bed" / "B.bed").read_text() == "chr1\t6000\t6400\tB_region_1\t12\t.\n"


def test_write_peaks_errors(regions, tmp_path):
    write_peaks(regions, tmp_path / "p.bed")
    with pytest.raises(ChipviInputError, match="already exists"):
        write_peaks(regions, tmp_path / "p.bed")
    with pytest.raises(ChipviInputError, match="Cannot tell the peak format"):
        write_peaks(regions, tmp_path / "p.txt")
    with pytest.raises(ChipviInputError, match="group"):
        write_peaks(regions, tmp_path / "q.bed", groups=["C"])
    with pytest.raises(ChipviInputError, match="lacks column"):
        write_peaks(regions.drop(columns="score"), tmp_path / "r.bed")
    a = make_adata()
    with pytest.raises(ChipviInputError, match="call_enriched_regions"):
        write_peaks(a, tmp_path / "s.bed")


def test_bigwig_from_simulated_bams(tmp_path):
    import chipvi

    sim = chipvi.datasets.simulate(
        tmp_path / "sim", seed=1, chrom_sizes={"chrA": 30_050, "chrB": 20_000},
        depths=[5_000, 3_000], control_depths=[3_000, 2_000],
    )  # fmt: skip
    adata = chipvi.read_bams(sim.samplesheet, progress=False)
    paths = write_bigwig(adata, tmp_path / "bw")
    bw = pyBigWig.open(str(paths[adata.var_names[0]]))
    try:
        assert bw.chroms() == sim.chrom_sizes
        last = bw.intervals("chrA")[-1]
        assert last[:2] == (30_000, 30_050)  # the short last bin ends at the chromosome end
    finally:
        bw.close()
    back = read_bigwig_bins(paths, adata)
    np.testing.assert_array_equal(back.to_numpy(), adata.X)
    lines = write_bedgraph(adata, tmp_path / "bg", layer="control")
    table = pd.read_csv(lines[adata.var_names[1]], sep="\t", header=None)
    np.testing.assert_array_equal(table[3], adata.layers["control"][:, 1])
