"""Tests of chipvi.io.read_bed and the bin/interval overlap helper."""

from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest

from chipvi import ChipviInputError
from chipvi._bins import overlapping_bins
from chipvi.io import read_bed


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


def _line_by_line(path) -> list[list[str]]:
    """The BED definition read_bed implements, one line at a time."""
    rows = []
    for line in open(path, newline="").read().splitlines():
        if not line.strip() or line.startswith(("#", "track", "browser")):
            continue
        rows.append(line.split("\t") if "\t" in line else line.split())
    return rows


def test_read_bed_matches_the_line_by_line_definition(tmp_path):
    """Ragged rows, a mix of tab and space lines, CRLF, quotes and '#' inside fields, blank
    lines of whitespace: the table is what splitting each line gives."""
    path = tmp_path / "mixed.bed"
    path.write_bytes(
        b"browser hide all\r\n"
        b'chr1\t10\t20\t"quoted name\t5\t+\r\n'
        b"  \t \r\n"
        b"chr2 30   40\r\n"
        b"chr3\t0\t1\tn#1\t\t-\tx\ty\r\n"
        b"trackless\t1\t2\n"
        b"chr4\t5\t5\n"
    )
    bed = read_bed(path)
    rows = _line_by_line(path)
    width = max(len(r) for r in rows)
    assert bed.shape == (len(rows), width) and list(bed.columns[6:]) == ["col7", "col8"]
    expected = [r + [""] * (width - len(r)) for r in rows]
    got = bed.astype(str).to_numpy().tolist()
    assert got == expected
    assert bed["name"].tolist() == ['"quoted name', "", "n#1", ""]  # 'trackless' skipped


def test_read_bed_large_random_file_equals_definition(tmp_path):
    rng = np.random.default_rng(3)
    n = 5000
    start = rng.integers(0, 10**6, n)
    end = start + rng.integers(0, 500, n)
    width = rng.integers(3, 8, n)
    lines = []
    for i in range(n):
        fields = [f"chr{i % 7}", str(start[i]), str(end[i])] + [
            f"f{j}" for j in range(width[i] - 3)
        ]
        lines.append("\t".join(fields))
        if i % 997 == 0:
            lines.append("# a comment")
    path = tmp_path / "random.bed.gz"
    with gzip.open(path, "wt") as fh:
        fh.write("\n".join(lines))  # no final newline
    bed = read_bed(path)
    assert bed["start"].tolist() == start.tolist() and bed["end"].tolist() == end.tolist()
    assert bed.shape == (n, 7)
    assert (bed["col7"] != "").sum() == (width == 7).sum()


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (
            b"chr1 0 10\nchr1 5\n",
            r"line 2: expected at least 3 fields \(chrom, start, end\), got 2",
        ),
        (
            b"chr1\t0\t10\r\nchr1\t5\t1e3\r\n",
            r"line 2: start and end must be integers, got '5' and '1e3'",
        ),
        (b"track x\n\nchr1\t9\t8\n", r"line 3: need 0 <= start <= end, got start=9, end=8"),
    ],
)
def test_read_bed_errors_count_lines_of_the_file(tmp_path, content, match):
    path = tmp_path / "bad.bed"
    path.write_bytes(content)
    with pytest.raises(ChipviInputError, match=match):
        read_bed(path)


def test_read_bed_empty_file(tmp_path):
    path = tmp_path / "empty.bed"
    path.write_bytes(b"")
    bed = read_bed(path)
    assert list(bed.columns) == ["chrom", "start", "end"] and len(bed) == 0
    assert bed["start"].dtype == np.int64
