"""simulate → bin → train → denoise → call with the real ChIPVI, and `chipvi demo`.

The demo runs as a subprocess (what the README's first command does); the other steps go
through :func:`chipvi.cli.main` in-process (the console script's entry point) to keep the
suite fast.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_main(capsys, *args) -> tuple[int, str, str]:
    from chipvi.cli import main

    status = main([str(a) for a in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    from chipvi.cli import main

    status = main(
        [
            "simulate",
            str(out / "sim"),
            "--seed",
            "3",
            "--n-chroms",
            "1",
            "--chrom-length",
            "200000",
            "--depths",
            "20000,8000",
            "-q",
        ]
    )
    assert status == 0
    return out


def test_simulate_and_bin(sim, capsys):
    sheet = sim / "sim" / "samplesheet.csv"
    assert sheet.is_file()
    out = sim / "bins.h5ad"
    status, stdout, err = run_main(capsys, "bin", sheet, "-o", out)
    assert status == 0, err
    adata = ad.read_h5ad(out)
    rows = pd.read_csv(sheet)
    assert list(adata.var_names) == list(rows["sample"])
    assert adata.n_obs == 1000 and int(adata.obs["end"].iloc[-1]) == 200_000
    totals = np.asarray(adata.X).sum(0)
    for name, total in zip(adata.var_names, totals, strict=True):
        assert f"{name}: {int(total)} reads counted" in stdout
    # the deeper library has more reads counted
    assert totals[0] > totals[1] > 0
    # --max-per-position removes the simulator's unflagged PCR jackpots (replicate 2) and
    # other same-position reads; it is recorded in uns
    dedup = sim / "bins_dedup.h5ad"
    status, _, err = run_main(capsys, "bin", sheet, "-o", dedup, "--max-per-position", "auto", "-q")
    assert status == 0, err
    fewer = ad.read_h5ad(dedup)
    assert fewer.uns["chipvi"]["max_per_position"] == "auto"
    used = fewer.uns["chipvi"]["max_per_position_used"]
    assert len(used["bam"]) == 4 and all(n >= 1 for n in used["max_per_position"])
    assert (np.asarray(fewer.X).sum(0) < totals).all()
    assert np.asarray(fewer.X).max(0)[1] < np.asarray(adata.X).max(0)[1]

    # refusals: existing output (untouched), missing sheet, wrong suffix, bad bin size
    stamp = out.stat().st_mtime_ns
    status, _, err = run_main(capsys, "bin", sheet, "-o", out)
    assert status == 2 and "already exists" in err and out.stat().st_mtime_ns == stamp
    status, _, err = run_main(capsys, "bin", sim / "nope.csv", "-o", sim / "x.h5ad")
    assert status == 2 and "nope.csv does not exist" in err and not (sim / "x.h5ad").exists()
    status, _, err = run_main(capsys, "bin", sheet, "-o", sim / "x.csv")
    assert status == 2 and "must end in .h5ad" in err
    status, _, err = run_main(capsys, "bin", sheet, "-o", sim / "x.h5ad", "--bin-size", "0")
    assert status == 2 and not (sim / "x.h5ad").exists()
    # read_bams itself checks the values of its flags
    status, _, err = run_main(
        capsys, "bin", sheet, "-o", sim / "x.h5ad", "--max-per-position", "lots"
    )
    assert status == 2 and not (sim / "x.h5ad").exists()
    assert "'auto' or None, got 'lots'" in err


def test_bin_region_and_chroms_on_the_bundled_sheet(tmp_path, capsys):
    from chipvi.datasets import cssq_chr19_samplesheet

    sheet = cssq_chr19_samplesheet()
    out = tmp_path / "slice.h5ad"
    status, stdout, err = run_main(
        capsys, "bin", sheet, "-o", out, "--region", "chr19:1,236,000-1,410,000", "-q"
    )
    assert status == 0, err
    adata = ad.read_h5ad(out)
    assert adata.n_obs == 870 and adata.obs_names[0] == "chr19:1236000-1236200"
    assert adata.uns["chipvi"]["region"] == "chr19:1236000-1410000"
    status, _, err = run_main(
        capsys,
        "bin",
        sheet,
        "-o",
        tmp_path / "chr19.h5ad",
        "--chroms",
        "chr19",
        "--bin-size",
        "5000",
        "-q",
    )
    assert status == 0, err
    assert ad.read_h5ad(tmp_path / "chr19.h5ad").n_obs == -(-59_128_983 // 5000)
    for region, message in [
        ("chrQ:1-10", "chromosome 'chrQ' is not in the data"),
        ("chr19:1-", "does not parse"),
        ("chr19:0-60,000,000", "lies outside chr19 (length 59,128,983)"),
    ]:
        status, _, err = run_main(
            capsys, "bin", sheet, "-o", tmp_path / "x.h5ad", "--region", region
        )
        assert status == 2 and message in err, err
        assert not (tmp_path / "x.h5ad").exists()


@pytest.fixture(scope="module")
def trained(sim):
    """A real ChIPVI run trained for a few epochs on the simulated bins."""
    from chipvi.cli import main

    if not (sim / "bins.h5ad").exists():
        assert (
            main(["bin", str(sim / "sim" / "samplesheet.csv"), "-o", str(sim / "bins.h5ad"), "-q"])
            == 0
        )
    run = sim / "run"
    status = main(
        [
            "train",
            "--config-dir",
            str(ROOT / "src" / "chipvi" / "configs"),
            "-q",
            "--run-dir",
            str(run),
            "data.samplesheet=null",
            f"data.h5ad={sim / 'bins.h5ad'}",
            "data.region=null",
            "data.chroms=null",
            "train.max_epochs=20",
            "model.n_hidden=8",
            "train.threads=1",
        ]
    )
    assert status == 0
    return run


def test_denoise_and_call(trained, capsys):
    # call before denoise: one posterior pass of the model; after: denoised.h5ad's keys
    status, stdout, err = run_main(capsys, "call", trained, "-o", trained.parent / "pre")
    assert status == 0, err
    n_pre = int(stdout.split("chipvi call: ")[1].split()[0])
    status, stdout, err = run_main(capsys, "denoise", trained)
    assert status == 0, err
    den = ad.read_h5ad(trained / "denoised" / "denoised.h5ad")
    assert (
        den.layers["chipvi_lfe"].shape == den.shape and np.isfinite(den.layers["chipvi_lfe"]).all()
    )
    groups = list(dict.fromkeys(den.var["group"].astype(str)))
    assert list(den.obsm["chipvi_group_lfe"].columns) == groups
    # The conservative score is the 5 % posterior quantile: below the mean.
    lfe, lower = den.layers["chipvi_lfe"], den.layers["chipvi_lfe_lower"]
    assert (lower <= lfe + 1e-6).all() and (den.layers["chipvi_lfe_sd"] > 0).all()
    assert den.uns["chipvi_posterior"]["params"]["log_base"] == "e"
    # Each library's own evidence: its own layers, lower bound below the mean.
    own, own_lower = den.layers["chipvi_own_lfe"], den.layers["chipvi_own_lfe_lower"]
    assert own.shape == den.shape and np.isfinite(own).all() and (own_lower <= own + 1e-6).all()
    # one track per group, named with its log base (log2 by default, as deepTools)
    assert sorted(p.name for p in (trained / "denoised" / "tracks").iterdir()) == sorted(
        f"{g}.log2_fold_enrichment.bw" for g in groups
    )
    import pyBigWig

    bw = pyBigWig.open(
        str(trained / "denoised" / "tracks" / f"{groups[0]}.log2_fold_enrichment.bw")
    )
    chrom = str(den.obs["chrom"].iloc[0])
    got = np.array(bw.stats(chrom, 0, int(den.obs["end"].iloc[9]), nBins=10), dtype=float)
    np.testing.assert_allclose(got, den.obsm["chipvi_group_lfe"][groups[0]].to_numpy()[:10] / np.log(2),
                               rtol=1e-4, atol=1e-5)  # fmt: skip
    assert den.uns["chipvi_tracks"]["log_base"] == "2"
    # per-library bedGraph in natural log, of the conservative kind
    status, _, err = run_main(capsys, "denoise", trained, "-o", trained.parent / "den_lib",
                              "--level", "library", "--format", "bedgraph", "--log-base", "e",
                              "--kind", "log_fold_enrichment_lower")  # fmt: skip
    assert status == 0, err
    lib = den.var_names[0]
    bg = pd.read_csv(trained.parent / "den_lib" / "tracks" / f"{lib}.ln_fold_enrichment_lower.bedGraph",
                     sep="\t", header=None)  # fmt: skip
    np.testing.assert_allclose(bg[3].to_numpy()[:10], den.layers["chipvi_lfe_lower"][:10, 0],
                               rtol=1e-4, atol=1e-5)  # fmt: skip
    with pytest.raises(SystemExit) as usage:  # --kind lists its choices (argparse)
        run_main(capsys, "denoise", trained, "-o", trained.parent / "den_bad", "--kind", "loud")
    assert usage.value.code == 2 and not (trained.parent / "den_bad").exists()
    assert "invalid choice: 'loud'" in capsys.readouterr().err
    status, _, err = run_main(capsys, "denoise", trained)
    assert status == 2 and "already exists" in err

    status, stdout, err = run_main(capsys, "call", trained, "--q", "0.05")
    assert status == 0, err
    peaks = sorted((trained / "peaks").iterdir())
    assert [p.name for p in peaks] == sorted(f"{g}.narrowPeak" for g in groups)
    n_regions = int(stdout.split("chipvi call: ")[1].split()[0])
    assert n_regions > 0  # the simulation has peaks at ~60 per Mb
    assert n_regions == n_pre  # the same posterior, read back from denoised.h5ad
    assert n_regions == sum(len(p.read_text().splitlines()) for p in peaks)
    status, _, err = run_main(capsys, "call", trained, "-q", "2")
    assert status == 2 and "-q/--qvalue must be in (0, 1]" in err
    # broadPeak holds domains: it needs --broad, the format never switches the method
    broad_out = trained.parent / "broad"
    status, _, err = run_main(capsys, "call", trained, "--format", "broadPeak", "-o", broad_out)
    assert status == 2 and "add --broad" in err and not broad_out.exists()
    status, _, err = run_main(capsys, "call", trained, "--broad-cutoff", "0.1", "-o", broad_out)
    assert status == 2 and "--broad-cutoff applies to --broad" in err
    # a stricter q and a minimum length give fewer regions; -n names the files like MACS3
    strict = trained.parent / "strict"
    status, stdout, err = run_main(capsys, "call", trained, "-q", "0.001", "--min-length", "600",
                                   "-n", "sim", "-o", strict)  # fmt: skip
    assert status == 0, err
    assert sorted(p.name for p in strict.iterdir()) == sorted(
        f"sim_{g}_peaks.narrowPeak" for g in groups
    )
    n_strict = int(stdout.split("chipvi call: ")[1].split()[0])
    assert n_strict < n_regions
    for p in strict.iterdir():
        group = p.name.removeprefix("sim_").removesuffix("_peaks.narrowPeak")
        for i, line in enumerate(p.read_text().splitlines()):
            start, end = map(int, line.split("\t")[1:3])
            assert end - start >= 600
            assert line.split("\t")[3] == f"sim_{group}_peak_{i + 1}"  # MACS3 -n naming
    # broad domains: seeds linked through weaker bins, so no more regions than narrow
    status, stdout, err = run_main(capsys, "call", trained, "--broad", "-o", broad_out)
    assert status == 0, err
    assert sorted(p.name for p in broad_out.iterdir()) == sorted(f"{g}.broadPeak" for g in groups)
    n_broad = int(stdout.split("chipvi call: ")[1].split()[0])
    assert 0 < n_broad <= n_regions
    assert all(
        len(line.split("\t")) == 9
        for p in broad_out.iterdir()
        for line in p.read_text().splitlines()
    )
    kinds = [
        json.loads(line)["event"]
        for line in (trained / "facts" / "events.jsonl").read_text().splitlines()
    ]
    assert kinds[-5:] == ["denoise", "denoise", "call", "call", "call"]

    # a report on a denoised run includes replicate concordance raw vs denoised
    status, _, err = run_main(capsys, "report", trained, "-o", trained.parent / "report", "-q")
    assert status == 0, err
    conc = pd.read_csv(trained.parent / "report" / "concordance.csv")
    n_pairs = sum(k * (k - 1) // 2 for k in den.var["group"].value_counts())
    assert len(conc) == n_pairs and conc[["pearson_raw", "pearson_denoised"]].notna().all().all()
    assert (trained.parent / "report" / "concordance.png").is_file()


def test_denoise_refuses_unfinished_run(tmp_path, capsys):
    status, _, err = run_main(capsys, "denoise", tmp_path)
    assert status == 2 and "not a chipvi run directory" in err
    (tmp_path / "config.yaml").write_text("name: x\n")
    status, _, err = run_main(capsys, "denoise", tmp_path)
    assert status == 2 and "no trained model" in err and "--resume" in err


def test_demo_end_to_end(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1")

    def demo(*args):
        return subprocess.run(
            [sys.executable, "-m", "chipvi", "demo", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )

    (tmp_path / "taken").mkdir()
    res = demo("-o", "taken", "-q")
    assert res.returncode == 2 and "not made by `chipvi demo`" in res.stderr

    res = demo("--epochs", "3")
    assert res.returncode == 0, res.stderr[-3000:]
    out = tmp_path / "chipvi_demo"
    for rel in (
        "bins.h5ad",
        "denoised.h5ad",
        "summary.txt",
        "tracks.png",
        "run/config.yaml",
        "run/facts/events.jsonl",
        "run/model/model.pt",
        "bigwig/HESC.log2_fold_enrichment.bw",
        "bigwig/HSMM.log2_fold_enrichment.bw",
        "peaks/HESC.narrowPeak",
        "peaks/HSMM.narrowPeak",
        ".chipvi_demo",
    ):
        assert (out / rel).exists(), rel
    summary = (out / "summary.txt").read_text()
    assert summary.strip() in res.stdout.replace("\r", "")
    bins = ad.read_h5ad(out / "bins.h5ad")
    assert f"({bins.n_obs} bins of 200 bp)" in summary
    for name, total in zip(bins.var_names, np.asarray(bins.X).sum(0), strict=True):
        assert f"{name:<10} ChIP reads {int(total):>7,}" in summary
    assert "HESC   raw" in summary and "HSMM   raw" in summary
    assert len(re.findall(r"own evidence -?\d\.\d{3}", summary)) == 2
    # No temporary of atomic_dir (.chipvi_demo.<random>.<pid>.part or .old) beside the output,
    # nor of atomic_path inside it.
    assert not list(tmp_path.glob(".chipvi_demo.*"))
    assert [p.name for p in out.rglob(".*")] == [".chipvi_demo"]


def test_demo_replaces_only_its_own_folder(tmp_path):
    from chipvi import ChipviInputError
    from chipvi.cli._demo import MARKER, _check_out

    _check_out(tmp_path / "new", overwrite=False)  # absent: fine
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / MARKER).write_text("")
    _check_out(tmp_path / "mine", overwrite=False)  # made by a demo: replaced
    (tmp_path / "other").mkdir()
    with pytest.raises(ChipviInputError, match="--overwrite"):
        _check_out(tmp_path / "other", overwrite=False)
    _check_out(tmp_path / "other", overwrite=True)


def test_real_model_resume_after_ctrl_c_matches(sim, capsys, monkeypatch):
    """ChIPVI (torch Adam via Lightning, contiguous-block sampler) resumes bit-identically."""
    import signal

    import torch

    from chipvi.cli import main

    if not (sim / "bins.h5ad").exists():
        assert (
            main(["bin", str(sim / "sim" / "samplesheet.csv"), "-o", str(sim / "bins.h5ad"), "-q"])
            == 0
        )
    common = [
        "train",
        "--config-dir",
        str(ROOT / "src" / "chipvi" / "configs"),
        "-q",
        "data.samplesheet=null",
        f"data.h5ad={sim / 'bins.h5ad'}",
        "data.region=null",
        "data.chroms=null",
        "train.max_epochs=4",
        "train.checkpoint_interval_s=0",
        "model.n_hidden=8",
        "train.threads=1",
    ]
    assert main([*common, "--run-dir", str(sim / "full")]) == 0
    handler = signal.getsignal(signal.SIGINT)
    monkeypatch.setenv("CHIPVI_TEST_KILL_AFTER_EPOCH", "1:INT")
    # Ctrl-C as in a terminal, even when the suite runs where SIGINT is ignored (a background
    # job of a non-interactive shell).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        status = main([*common, "--run-dir", str(sim / "cut")])
    finally:
        signal.signal(signal.SIGINT, handler)  # Lightning ignores SIGINT after an interrupt
    assert status == 130
    assert f"chipvi train --resume {sim / 'cut'}" in capsys.readouterr().err
    monkeypatch.delenv("CHIPVI_TEST_KILL_AFTER_EPOCH")
    assert main(["train", "--resume", str(sim / "cut"), "-q"]) == 0
    a = torch.load(sim / "full" / "model" / "model.pt", weights_only=False)["model_state_dict"]
    b = torch.load(sim / "cut" / "model" / "model.pt", weights_only=False)["model_state_dict"]
    tensors = [k for k, v in a.items() if isinstance(v, torch.Tensor)]
    assert tensors and all(torch.equal(a[k], b[k]) for k in tensors)
