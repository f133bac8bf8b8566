"""Sample sheet parsing and its bad inputs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from chipvi import ChipviInputError
from chipvi.io import read_samplesheet

HEADER = "sample,bam,control,target,group,replicate"


def write(tmp_path: Path, text: str, name: str = "sheet.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_paths_resolve_against_sheet_folder(tmp_path):
    sub = tmp_path / "project"
    sub.mkdir()
    sheet = write(
        sub,
        f"{HEADER}\n"
        "a, bams/a.bam ,input.bam,H3K4me3,g1,1\n"
        f"b,/abs/b.bam,input.bam,H3K4me3,g1,2\n"
        "c,c.bam,,,g2,R1\n",
    )
    df = read_samplesheet(sheet)
    assert list(df["sample"]) == ["a", "b", "c"]
    assert list(df["bam"]) == [str(sub / "bams/a.bam"), "/abs/b.bam", str(sub / "c.bam")]
    assert list(df["control"]) == [str(sub / "input.bam")] * 2 + [""]
    assert list(df["target"]) == ["H3K4me3", "H3K4me3", ""]
    assert list(df["replicate"]) == ["1", "2", "R1"]
    assert "depth" not in df.columns


def test_optional_depth_columns(tmp_path):
    sheet = write(
        tmp_path,
        f"{HEADER},depth,control_depth\na,a.bam,i.bam,t,g,1,1000,\nb,b.bam,i.bam,t,g,2,,2500\n",
    )
    df = read_samplesheet(sheet)
    assert str(df["depth"].dtype) == "Int64"
    assert df["depth"].iloc[0] == 1000 and pd.isna(df["depth"].iloc[1])
    assert pd.isna(df["control_depth"].iloc[0]) and df["control_depth"].iloc[1] == 2500


@pytest.mark.parametrize("value", ["1.5", "-3", "many"])
def test_bad_depth(tmp_path, value):
    sheet = write(tmp_path, f"{HEADER},depth\na,a.bam,,t,g,1,{value}\n")
    with pytest.raises(
        ChipviInputError, match=rf"'depth' must be a non-negative integer.*{value}.*line 2"
    ):
        read_samplesheet(sheet)


def test_missing_sheet(tmp_path):
    with pytest.raises(ChipviInputError, match="does not exist"):
        read_samplesheet(tmp_path / "none.csv")


def test_missing_column(tmp_path):
    sheet = write(tmp_path, "sample,bam,target,group,replicate\na,a.bam,t,g,1\n")
    with pytest.raises(ChipviInputError, match=r"lacks column\(s\) \['control'\]"):
        read_samplesheet(sheet)


def test_duplicate_sample(tmp_path):
    sheet = write(tmp_path, f"{HEADER}\na,a.bam,,t,g,1\nb,b.bam,,t,g,2\na,c.bam,,t,g,3\n")
    with pytest.raises(ChipviInputError, match=r"\['a'\] appear more than once \(lines 2, 4\)"):
        read_samplesheet(sheet)


def test_empty_group(tmp_path):
    sheet = write(tmp_path, f"{HEADER}\na,a.bam,,t,g,1\nb,b.bam,,t, ,2\n")
    with pytest.raises(ChipviInputError, match=r"empty 'group' on line\(s\) 3"):
        read_samplesheet(sheet)


def test_empty_bam(tmp_path):
    sheet = write(tmp_path, f"{HEADER}\na,,,t,g,1\n")
    with pytest.raises(ChipviInputError, match="empty 'bam'"):
        read_samplesheet(sheet)


def test_no_rows(tmp_path):
    sheet = write(tmp_path, f"{HEADER}\n")
    with pytest.raises(ChipviInputError, match="no rows"):
        read_samplesheet(sheet)


def test_bam_checked_by_read_bams(tmp_path):
    from chipvi.io import read_bams

    sheet = write(tmp_path, f"{HEADER}\na,missing.bam,,t,g,1\n")
    with pytest.raises(ChipviInputError, match=r"missing.bam does not exist"):
        read_bams(sheet, progress=False)
