"""``chipvi download`` through its argparse registration, against the fake portal."""

from __future__ import annotations

import argparse

import pandas as pd
import pytest

from chipvi.cli import _download as cli_download


@pytest.fixture
def portal(portal, monkeypatch):
    """The shared fake portal (conftest), also as the CLI's base URL."""
    monkeypatch.setenv("CHIPVI_ENCODE_URL", portal.url)
    return portal


def run(*argv: str) -> int:
    # Like chipvi.cli.main: a top-level -q/--quiet next to the subcommands.
    parser = argparse.ArgumentParser(prog="chipvi")
    parser.add_argument("-q", "--quiet", action="store_true")
    subparsers = parser.add_subparsers(dest="command", required=True)
    cli_download.register(subparsers)
    args = parser.parse_args(list(argv))
    assert args.command == "download"
    return args.func(args)


def test_download_by_target_and_biosample(portal, tmp_path, capsys):
    out = tmp_path / "data"
    status = run(
        "download",
        "--target",
        "H3K27me3",
        "--biosample",
        "K562",
        "--out",
        str(out),
        "--retries",
        "1",
        "--quiet",
    )
    assert status == 0
    sheet = pd.read_csv(out / "samplesheet.csv", dtype=str, keep_default_na=False)
    assert sheet["sample"].tolist() == ["ENCFF101AAA", "ENCFF102AAA"]
    assert (out / "ENCFF902CCC.bam").is_file() and (out / "ENCFF902CCC.bam.bai").is_file()
    captured = capsys.readouterr()
    assert str(out / "samplesheet.csv") in captured.out


def test_dry_run_downloads_nothing_and_reports_skips(portal, tmp_path, capsys):
    status = run(
        "download", "--experiment", "ENCSR100KKK", "--out", str(tmp_path / "d"), "--dry-run"
    )
    assert status == 0
    captured = capsys.readouterr()
    assert "ENCFF101AAA" in captured.out and "controlled_by" in captured.out
    assert "3 file(s) to fetch" in captured.out
    assert "ENCFF104AAA (ChIP, ENCSR100KKK): pooled" in captured.err
    assert not (tmp_path / "d").exists()
    assert portal.requests("storage") == []


def test_unknown_target_exits_2_with_suggestion(portal, tmp_path, capsys):
    status = run("download", "--target", "H3K27me", "--out", str(tmp_path))
    assert status == 2
    assert "Did you mean: H3K27me3" in capsys.readouterr().err


def test_nothing_to_search_for(portal, tmp_path, capsys):
    assert run("download", "--out", str(tmp_path)) == 2
    assert "--target" in capsys.readouterr().err


def test_html_portal_exits_1(portal, tmp_path, capsys):
    portal.html = True
    assert run("download", "--target", "H3K27me3", "--out", str(tmp_path)) == 1
    assert "HTML" in capsys.readouterr().err


def test_top_level_quiet_is_not_overridden(portal, tmp_path, capsys):
    assert run("-q", "download", "--experiment", "ENCSR300SSS", "--out", str(tmp_path)) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == str(tmp_path / "samplesheet.csv")
    assert "ENCODE download into" not in captured.err  # no summary when quiet


def test_python_m_chipvi_download(portal, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    from chipvi import cli

    if not hasattr(cli, "build_parser"):
        pytest.skip("chipvi.cli has no subcommand parser yet")
    try:
        cli.build_parser().parse_args(["download", "--out", str(tmp_path)])
    except SystemExit:
        pytest.skip("chipvi.cli.main does not register download yet")
    src = Path(__file__).resolve().parents[1] / "src"
    env = {**os.environ, "PYTHONPATH": str(src), "CHIPVI_ENCODE_URL": portal.url}
    command = [sys.executable, "-m", "chipvi", "download", "--experiment", "ENCSR300SSS"]
    command += ["--out", str(tmp_path), "--retries", "1"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "4 file(s) downloaded" in done.stderr  # 2 ChIP + 2 controls
    assert (tmp_path / "samplesheet.csv").is_file()
    assert (tmp_path / "ENCFF912CCC.bam.bai").is_file()
