"""Tests of chipvi.io.read_bed and the bin/interval overlap helper."""

from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest

from chipvi import ChipviInputError
from chipvi.io import read_bed
from chipvi._bins import overlapping_bins


def test_read_bed_skips_headers_and_keeps_order(tmp_path):
    path = tmp_path / "a.bed"
    path.write_text(
        "track name=x\n# comment\nbrowser position chr1\n\n"
        "chr2\t500\t900\tp1\t7\t+\n"
        "chr1\t0\t100\n"
        "chr1\t50\t60\tp3\t0\t-\textra\n"
    )
    bed = read_bed(path)
    assert list(bed.columns) == ["chrom", "start", "end", "name", "score", "strand", "col7"]
    assert list(bed["chrom"]) == ["chr2", "chr1", "chr1"]
    assert bed["start"].tolist() == [500, 0, 50] and bed["end"].tolist() == [900, 100, 60]
    assert bed["start"].dtype == np.int64 and bed["end"].dtype == np.int64
    assert bed["name"].tolist() == ["p1", "", "p3"]
    assert bed["col7"].tolist() == ["", "", "extra"]


def test_read_bed_gzip_and_whitespace(tmp_path):
    path = tmp_path / "a.bed.gz"
    with gzip.open(path, "wt") as fh:
        fh.write("chrX 10 20\nchrY  5   6\n")
    bed = read_bed(path)
    assert list(bed.columns) == ["chrom", "start", "end"]
    assert bed.values.tolist() == [["chrX", 10, 20], ["chrY", 5, 6]]


def test_read_bed_empty(tmp_path):
    path = tmp_path / "empty.bed"
    path.write_text("# nothing\n")
    bed = read_bed(path)
    assert list(bed.columns) == ["chrom", "start", "end"] and len(bed) == 0


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("chr1\t0\t10\nchr1\t5\n", r"line 2: expected at least 3 fields"),
        ("chr1\t0\t10\nchr1\tx\t10\n", r"line 2: start and end must be integers"),
        ("chr1\t1.5\t10\n", r"line 1: start and end must be integers"),
        ("chr1\t-1\t10\n", r"line 1: need 0 <= start <= end"),
        ("#h\nchr1\t20\t10\n", r"line 2: need 0 <= start <= end"),
    ],
)
def test_read_bed_malformed_lines_name_file_and_line(tmp_path, content, match):
    path = tmp_path / "bad.bed"
    path.write_text(content)
    with pytest.raises(ChipviInputError, match=match) as err:
        read_bed(path)
    assert "bad.bed" in str(err.value)


def test_read_bed_missing_file(tmp_path):
    with pytest.raises(ChipviInputError, match="does not exist"):
        read_bed(tmp_path / "nope.bed")


def _brute_force(obs: pd.DataFrame, intervals: pd.DataFrame) -> np.ndarray:
    out = np.zeros(len(obs), dtype=bool)
    for i, (c, s, e) in enumerate(obs[["chrom", "start", "end"]].itertuples(index=False)):
        for ic, a, b in intervals[["chrom", "start", "end"]].itertuples(index=False):
            if ic == c and a < e and b > s:
                out[i] = True
                break
    return out


def test_overlapping_bins_matches_brute_force():
    rng = np.random.default_rng(0)
    starts = np.arange(0, 5000, 100)
    obs = pd.DataFrame(
        {
            "chrom": pd.Categorical(["c1"] * len(starts) + ["c2"] * len(starts)),
            "start": np.r_[starts, starts],
            "end": np.r_[np.minimum(starts + 100, 4950), starts + 100],
        }
    )
    obs = obs.sample(frac=1.0, random_state=1)  # any row order is kept
    a = rng.integers(0, 5000, 40)
    intervals = pd.DataFrame(
        {
            "chrom": rng.choice(["c1", "c2", "c3"], 40),
            "start": a,
            "end": a + rng.integers(0, 300, 40),  # includes zero-length intervals
        }
    )
    # Edges: an interval ending exactly at a bin start, one starting at a bin end.
    intervals.loc[len(intervals)] = ["c1", 250, 300]
    intervals.loc[len(intervals)] = ["c2", 4200, 4201]
    got = overlapping_bins(obs, intervals)
    np.testing.assert_array_equal(got, _brute_force(obs, intervals))
    assert 0 < got.sum() < len(obs)


def test_overlapping_bins_touching_is_not_overlap():
    obs = pd.DataFrame({"chrom": ["c"] * 3, "start": [0, 100, 200], "end": [100, 200, 300]})
    intervals = pd.DataFrame({"chrom": ["c", "c"], "start": [100, 150], "end": [100, 200]})
    np.testing.assert_array_equal(overlapping_bins(obs, intervals), [False, True, False])
