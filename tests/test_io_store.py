"""Bins written to a zarr store block by block: same AnnData as in memory, checked on open."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import zarr

from _bam_factory import random_reads, write_bam
from chipvi import ChipviInputError
from chipvi.io import _binning, _store, open_store, read_bams

CONTIGS = [("chrA", 5003), ("chrB", 2000), ("chrM", 777)]


@pytest.fixture(scope="module")
def sheet(tmp_path_factory):
    return write_sheet(tmp_path_factory.mktemp("store_bams"))


def write_sheet(d):
    """Three ChIP libraries (one paired-end) and a control shared by two, in folder ``d``."""
    rng = np.random.default_rng(11)
    write_bam(d / "a.bam", random_reads(rng, CONTIGS, 2000), CONTIGS)
    write_bam(d / "b.bam", random_reads(rng, CONTIGS, 1000, paired=True), CONTIGS)
    write_bam(d / "input.bam", random_reads(rng, CONTIGS, 700), CONTIGS)
    path = d / "sheet.csv"
    path.write_text(
        "sample,bam,control,target,group,replicate\n"
        "s1,a.bam,input.bam,H3K4me3,g1,1\n"
        "s2,b.bam,input.bam,H3K4me3,g1,2\n"
        "s3,a.bam,,H3K4me3,g2,1\n"
    )
    return path


@pytest.fixture
def small_passes(monkeypatch):
    """One chromosome per counting pass (the real limit is millions of bins)."""
    monkeypatch.setattr(_binning, "_STORE_PASS_BINS", 12)


def assert_same_anndata(a: ad.AnnData, b: ad.AnnData, categories: bool = True) -> None:
    """Same bins, libraries, counts, layers and binning record; with ``categories`` the same
    chromosome categories (an AnnData view drops unused ones)."""
    if categories:
        pd.testing.assert_frame_equal(a.obs, b.obs)
    else:
        pd.testing.assert_frame_equal(a.obs.astype({"chrom": str}), b.obs.astype({"chrom": str}))
    pd.testing.assert_frame_equal(a.var, b.var, check_dtype=False)
    np.testing.assert_array_equal(a.X, b.X)
    assert sorted(a.layers) == sorted(b.layers)
    for key in a.layers:
        np.testing.assert_array_equal(a.layers[key], b.layers[key])
    for key in ("bin_size", "chrom_sizes", "version", "counting", "samplesheet"):
        assert a.uns["chipvi"][key] == b.uns["chipvi"][key]
    assert list(a.uns["chipvi"]["chrom_sizes"]) == list(b.uns["chipvi"]["chrom_sizes"])


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"bin_size": 37, "region": "chrA:1,000-4,000"},
        {"bin_size": 50, "chroms": ["chrM", "chrA"]},
    ],
)
def test_store_equals_in_memory_anndata(sheet, tmp_path, small_passes, kwargs):
    out = tmp_path / "bins.zarr"
    assert read_bams(sheet, out=out, chunk_size=7, progress=False, **kwargs) is None
    memory = read_bams(sheet, progress=False, **kwargs)
    assert_same_anndata(open_store(out).to_memory(), memory)
    np.testing.assert_array_equal(ad.read_zarr(out).layers["control"], memory.layers["control"])
    store = open_store(out)
    assert store.n_obs == memory.n_obs and store.chunk == 7
    assert store.bin_size == kwargs.get("bin_size", 200)
    assert zarr.open_group(out)["X"].chunks == (7, 3)
    # Blocks read back the same rows, the chromosome grid never split.
    ranges = store.block_ranges(4)
    assert ranges[0][0] == 0 and ranges[-1][1] == memory.n_obs
    assert all(b - a <= 4 and b == c for (a, b), (c, _) in zip(ranges, ranges[1:], strict=False))
    a, b = ranges[len(ranges) // 2]
    assert_same_anndata(store.block(a, b), memory[a:b].copy(), categories=False)
    assert list(store.block(a, b).obs["chrom"].cat.categories) == list(
        memory.obs["chrom"].cat.categories
    )
    starts = memory.obs["start"].to_numpy()
    first_of_chrom = np.r_[
        True, memory.obs["chrom"].to_numpy()[1:] != memory.obs["chrom"].to_numpy()[:-1]
    ]
    on_grid = starts % (4 * store.bin_size) == 0
    assert set(r[0] for r in ranges) == set(np.flatnonzero(on_grid | first_of_chrom))


def test_store_with_blacklist(sheet, tmp_path, small_passes):
    bed = tmp_path / "blacklist.bed"
    bed.write_text("chrA\t250\t401\nchrM\t700\t777\n")
    out = tmp_path / "bins.zarr"
    read_bams(sheet, out=out, blacklist=bed, chunk_size=5, progress=False)
    memory = read_bams(sheet, blacklist=bed, progress=False)
    stored = open_store(out).to_memory()
    assert_same_anndata(stored, memory)
    record = stored.uns["chipvi"]["filter_blacklist"]
    assert record["n_bins_removed"] == 3 and record["bp_removed"] == 200 + 200 + 177
    assert dict(record["bins_removed_by_chrom"]) == {"chrA": 2, "chrM": 1}


def test_existing_store_needs_overwrite(sheet, tmp_path):
    out = tmp_path / "bins.zarr"
    read_bams(sheet, out=out, progress=False)
    with pytest.raises(ChipviInputError, match="already exists"):
        read_bams(sheet, out=out, progress=False)
    read_bams(sheet, out=out, bin_size=100, overwrite=True, progress=False)
    assert open_store(out).bin_size == 100


def test_disk_full_leaves_no_store(sheet, tmp_path, small_passes, monkeypatch):
    calls = []
    append = _store.StoreWriter.append

    def failing(self, *args):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return append(self, *args)

    monkeypatch.setattr(_store.StoreWriter, "append", failing)
    with pytest.raises(OSError, match="No space left"):
        read_bams(sheet, out=tmp_path / "bins.zarr", progress=False)
    assert len(calls) == 2
    assert list(tmp_path.iterdir()) == []  # neither the store nor its temporary folder


def test_store_checks_on_open(sheet, tmp_path):
    out = tmp_path / "bins.zarr"
    read_bams(sheet, out=out, progress=False)
    with pytest.raises(ChipviInputError, match="holds 200 bp bins, not 25 bp"):
        open_store(out, bin_size=25)
    with pytest.raises(ChipviInputError, match=r"no layer \['gc'\]"):
        open_store(out, layers=["control", "gc"])
    with pytest.raises(ChipviInputError, match="not a bins store"):
        open_store(tmp_path / "missing.zarr")
    group = zarr.open_group(out, mode="r+")
    marker = dict(group.attrs[_store.MARKER])
    group.attrs[_store.MARKER] = {**marker, "version": "0.0.1"}
    with pytest.raises(ChipviInputError, match="written by chipvi 0.0.1"):
        open_store(out)
    del group.attrs[_store.MARKER]
    with pytest.raises(ChipviInputError, match=rf"marker is missing.*rm -r {out}"):
        open_store(out)


def test_store_path_must_end_in_zarr(sheet, tmp_path):
    with pytest.raises(ChipviInputError, match=r"must end in \.zarr"):
        read_bams(sheet, out=tmp_path / "bins.h5ad", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_cli_bin_writes_a_store(sheet, tmp_path, capsys):
    from chipvi.cli import main

    out = tmp_path / "bins.zarr"
    assert main(["bin", str(sheet), "-o", str(out), "--bin-size", "100", "--chunk-size", "16"]) == 0
    stdout = capsys.readouterr().out
    stored = open_store(out).to_memory()
    memory = read_bams(sheet, bin_size=100, progress=False)
    assert_same_anndata(stored, memory)
    assert open_store(out).chunk == 16
    assert f"{stored.n_obs} bins x 3 libraries -> {out}" in stdout
    assert f"s1: {memory.var['depth'].iloc[0]} reads counted" in stdout
    assert main(["bin", str(sheet), "-o", str(out), "-q"]) != 0
    assert "already exists; pass --overwrite" in capsys.readouterr().err
