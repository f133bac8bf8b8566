"""pp functions on a bins store, block by block: the same result as in memory."""

from __future__ import annotations

import numpy as np
import pytest

from chipvi import ChipviInputError, pp
from chipvi.io import _binning, open_store, read_bams
from test_io_store import assert_same_anndata, write_sheet


@pytest.fixture(scope="module")
def binned(tmp_path_factory):
    """A 50 bp store (chunks of 6 bins, one chromosome per counting pass) and its AnnData."""
    d = tmp_path_factory.mktemp("pp_store")
    sheet, store = write_sheet(d), d / "bins.zarr"
    with pytest.MonkeyPatch.context() as m:
        m.setattr(_binning, "_STORE_PASS_BINS", 50)
        read_bams(sheet, bin_size=50, out=store, chunk_size=6, progress=False)
    return store, read_bams(sheet, bin_size=50, progress=False)


@pytest.mark.parametrize("chunk_size", [None, 4, 12])
def test_aggregate_store_equals_in_memory(binned, tmp_path, chunk_size):
    store, memory = binned
    out = tmp_path / "agg.zarr"
    pp.aggregate_bins(store, 200, out=out, chunk_size=chunk_size)
    expected = pp.aggregate_bins(memory, 200, copy=True)
    result = open_store(out).to_memory()
    assert_same_anndata(result, expected)
    assert result.uns["chipvi"]["aggregated_from"] == 50
    assert open_store(out, bin_size=200).chunk == 6
    assert int(result.X.sum()) == int(memory.X.sum())


def test_aggregate_store_chunk_must_hold_whole_new_bins(binned, tmp_path):
    store, _ = binned
    with pytest.raises(
        ChipviInputError, match="not a multiple of the aggregation factor 4.*chunk_size=8"
    ):
        pp.aggregate_bins(store, 200, out=tmp_path / "agg.zarr", chunk_size=7)
    with pytest.raises(ChipviInputError, match="needs out="):
        pp.aggregate_bins(store, 200)
    with pytest.raises(ChipviInputError, match=r"out=\.\.\.\) is for bins stores"):
        pp.aggregate_bins(binned[1], 200, copy=True, out=tmp_path / "agg.zarr")
    assert list(tmp_path.iterdir()) == []


def test_filters_on_a_store_equal_in_memory(binned, tmp_path):
    store, memory = binned
    bed = tmp_path / "bl.bed"
    bed.write_text("chrA\t120\t260\nchrB\t1990\t2000\nchrM\t0\t777\n")
    cases = [
        (pp.filter_blacklist, (bed,)),
        (pp.filter_chroms, ()),
        (pp.filter_chroms, (["chrB", "chrM"], [])),
        (pp.filter_region, ("chrA:1,010-2,990",)),
    ]
    for i, (function, args) in enumerate(cases):
        out = tmp_path / f"f{i}.zarr"
        function(store, *args, out=out)
        expected = function(memory, *args, copy=True)
        result = open_store(out).to_memory()
        assert_same_anndata(result, expected)
        for key, value in expected.uns["chipvi"].items():
            if key.startswith("filter_"):
                got = result.uns["chipvi"][key]
                assert _plain(got) == _plain(value), key
    record = open_store(tmp_path / "f0.zarr").to_memory().uns["chipvi"]["filter_blacklist"]
    # chrA 100-300 (4 bins), chrB 1950-2000 (1), all of chrM (16)
    assert record["n_bins_removed"] == 4 + 1 + 16 and record["n_intervals"] == 3
    assert list(open_store(tmp_path / "f1.zarr").to_memory().obs["chrom"].cat.categories) == [
        "chrA",
        "chrB",
    ]


def test_filter_store_that_removes_everything_writes_nothing(binned, tmp_path):
    store, _ = binned
    bed = tmp_path / "all.bed"
    bed.write_text("chrA\t0\t5003\nchrB\t0\t2000\nchrM\t0\t777\n")
    with pytest.raises(ChipviInputError, match="covers every bin"):
        pp.filter_blacklist(store, bed, out=tmp_path / "f.zarr")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["all.bed"]


def _plain(value):
    """Nested dicts and arrays as dicts and lists (a zarr group lists keys in no set order)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return np.asarray(value).tolist() if isinstance(value, np.ndarray) else value
