"""`chipvi train` / `chipvi report` end to end: run directories, facts, sweeps, resume, errors.

Training goes through subprocesses (``python -m chipvi``) with a tiny Pyro model
(``_cli_fake_model.TinyChip``); refusals that happen before any import of torch are checked
in-process through :func:`chipvi.cli.main`, which is what the console script calls.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from _cli_fake_model import tiny_adata

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "src" / "chipvi" / "configs"
EPOCHS = 5


def chipvi(*args, cwd, env=None, timeout=300):
    """Run ``python -m chipvi ARGS`` with this checkout's code and the fake model importable."""
    full_env = dict(os.environ)
    full_env.update(
        {
            "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")]),
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "NUMBA_NUM_THREADS": "1",
        }
    )
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "chipvi", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def fake_args(h5ad: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--config-dir",
        str(CONFIGS),
        "-q",
        "data.samplesheet=null",
        f"data.h5ad={h5ad}",
        "data.region=null",
        "model.model_class=_cli_fake_model:TinyChip",
        "model.n_hidden=8",
        f"train.max_epochs={EPOCHS}",
        "train.batch_size=64",
        "train.checkpoint_interval_s=0",
        *extra,
    ]


def params(run: Path) -> dict:
    state = torch.load(run / "model" / "model.pt", weights_only=False)["model_state_dict"]
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def events(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "facts" / "events.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    work = tmp_path_factory.mktemp("cli")
    tiny_adata(300).write_h5ad(work / "tiny.h5ad")
    return work


@pytest.fixture(scope="module")
def sweep_runs(work):
    """A two-run sweep (``-m``) with TensorBoard logging on: {weight: run directory}."""
    out = work / "sweep"
    res = chipvi(
        *fake_args(
            work / "tiny.h5ad", "train.loggers=[tensorboard]", "name=full", f"output_dir={out}"
        ),
        "-m",
        "model.consistency_weight=1,10",
        cwd=work,
    )
    assert res.returncode == 0, res.stderr
    runs = {
        yaml.safe_load((r / "config.yaml").read_text())["model"]["consistency_weight"]: r
        for r in sorted(out.iterdir())
    }
    assert sorted(runs) == [1.0, 10.0]
    return runs


@pytest.fixture(scope="module")
def full_run(sweep_runs):
    return sweep_runs[1.0]


def test_help_and_unknown_commands(work, capsys):
    res = chipvi("frobnicate", cwd=work)
    assert res.returncode == 2 and "invalid choice: 'frobnicate'" in res.stderr
    for cmd in ("bin", "train", "denoise", "call", "report", "simulate", "demo"):
        assert cmd in res.stderr  # argparse lists the valid choices
    assert "Traceback" not in res.stderr
    from chipvi.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0 and "chipvi demo" in capsys.readouterr().out
    from chipvi.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["train", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--resume" in out and "-m, --multirun" in out and "model.n_hidden=64" in out
    with pytest.raises(SystemExit) as exc:
        main(["train", "--frobnicate"])
    assert exc.value.code == 2 and "--frobnicate" in capsys.readouterr().err


def test_run_directory_contents(full_run, work):
    run = full_run
    for rel in (
        "config.yaml",
        "facts/events.jsonl",
        "facts/scalars.csv",
        "facts/meta.json",
        "model/model.pt",
        "checkpoints/last.ckpt",
        "figures",
    ):
        assert (run / rel).exists(), rel
    ev = events(run)
    kinds = [e["event"] for e in ev]
    assert kinds == ["run_start"] + ["epoch_end"] * EPOCHS + ["train_end"]
    epochs = [e for e in ev if e["event"] == "epoch_end"]
    assert [e["epoch"] for e in epochs] == list(range(EPOCHS))
    assert all(e["finite"] and e["losses"]["elbo_train"] > 0 for e in epochs)
    # the fake model's ELBO falls while it learns
    assert epochs[-1]["losses"]["elbo_train"] < epochs[0]["losses"]["elbo_train"]

    rows = list(csv.DictReader((run / "facts" / "scalars.csv").open()))
    assert [int(r["epoch"]) for r in rows] == list(range(EPOCHS))
    assert {"epoch", "split", "elbo", "epoch_time_s", "bins_per_s"} <= set(rows[0])
    assert all(r["split"] == "train" and float(r["bins_per_s"]) > 0 for r in rows)
    assert [float(r["elbo"]) for r in rows] == pytest.approx(
        [e["losses"]["elbo_train"] for e in epochs]
    )

    meta = json.loads((run / "facts" / "meta.json").read_text())
    assert meta["seed"] == 0 and meta["software"]["torch"] == torch.__version__
    (inp,) = meta["data"]["inputs"]
    assert inp["sha256"] == hashlib.sha256((work / "tiny.h5ad").read_bytes()).hexdigest()
    assert (meta["data"]["n_bins"], meta["data"]["n_libraries"]) == (300, 4)

    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["name"] == "full" and cfg["train"]["max_epochs"] == EPOCHS
    assert cfg["model"]["model_class"] == "_cli_fake_model:TinyChip"
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))


def run_main(capsys, *args) -> tuple[int, str]:
    """In-process ``chipvi ARGS`` (same entry point as the console script): (status, stderr)."""
    from chipvi.cli import main

    status = main([str(a) for a in args])
    return status, capsys.readouterr().err


def test_refusals_write_nothing(full_run, work, capsys, monkeypatch):
    monkeypatch.chdir(work)
    # existing run directory: refused, untouched
    before = (full_run / "facts" / "events.jsonl").read_text()
    status, err = run_main(capsys, *fake_args(work / "tiny.h5ad"), "--run-dir", full_run)
    assert status == 2 and "already exists" in err and "--overwrite" in err
    assert (full_run / "facts" / "events.jsonl").read_text() == before
    # bad config values and inputs: nothing created under output_dir
    out = work / "bad_outputs"
    for extra, needle in [
        (["model.n_hiden=3"], "unknown config key 'model.n_hiden'"),
        (["train.max_epochs=two"], "'train.max_epochs' has the wrong type"),
        (["data.h5ad=missing.h5ad"], "missing.h5ad does not exist"),
        (["data.samplesheet=s.csv"], "set exactly one of 'data.samplesheet'"),
        (["model.model_class=nowhere:Model"], "cannot import 'nowhere'"),
    ]:
        status, err = run_main(capsys, *fake_args(work / "tiny.h5ad", f"output_dir={out}", *extra))
        assert status == 2 and needle in err, err
        assert not out.exists()
    # --resume: not a run, no checkpoint, finished, overrides
    status, err = run_main(capsys, "train", "--resume", work / "tiny.h5ad")
    assert status == 2 and "not a chipvi run directory" in err
    empty = work / "runs" / "empty"
    (empty / "facts").mkdir(parents=True)
    (empty / "config.yaml").write_text((full_run / "config.yaml").read_text())
    status, err = run_main(capsys, "train", "--resume", empty)
    assert status == 2 and "no checkpoint" in err
    status, err = run_main(capsys, "train", "--resume", full_run)
    assert status == 2 and "already finished" in err
    status, err = run_main(capsys, "train", "--resume", full_run, "model.n_hidden=4")
    assert status == 2 and "--resume takes only the run directory" in err


def test_missing_optional_logger_is_a_clear_error(work, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "wandb" else real(n, *a)
    )
    monkeypatch.chdir(work)
    status, err = run_main(
        capsys, *fake_args(work / "tiny.h5ad", "train.loggers=[wandb]", f"output_dir={work / 'wb'}")
    )
    assert status == 2 and "pip install 'chipvi[wandb]'" in err
    assert not (work / "wb").exists()


def test_resume_after_kill_matches_uninterrupted(full_run, work, monkeypatch):
    run = work / "runs" / "killed"
    # same config as the sweep's consistency_weight=1 run
    res = chipvi(
        *fake_args(
            work / "tiny.h5ad",
            "train.loggers=[tensorboard]",
            "name=full",
            "model.consistency_weight=1",
        ),
        "--run-dir",
        str(run),
        cwd=work,
        env={"CHIPVI_TEST_KILL_AFTER_EPOCH": "1"},
    )
    assert res.returncode == -signal.SIGKILL
    assert [e["event"] for e in events(run)][-1] == "epoch_end"
    assert not (run / "model").exists()
    monkeypatch.chdir(work)
    from chipvi.cli import main

    assert main(["train", "--resume", str(run), "-q"]) == 0  # in-process: the same entry point
    kinds = [e["event"] for e in events(run)]
    assert kinds.count("resume") == 1 and kinds[-1] == "train_end"
    rows = list(csv.DictReader((run / "facts" / "scalars.csv").open()))
    assert [int(r["epoch"]) for r in rows] == list(range(EPOCHS))
    full_rows = list(csv.DictReader((full_run / "facts" / "scalars.csv").open()))
    assert [r["elbo"] for r in rows] == [r["elbo"] for r in full_rows]
    a, b = params(full_run), params(run)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_ctrl_c_keeps_checkpoint_and_says_how_to_resume(work):
    run = work / "runs" / "sigint"
    env = dict(os.environ)
    env.update(
        {
            "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")]),
            "OMP_NUM_THREADS": "1",
        }
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "chipvi",
            *fake_args(work / "tiny.h5ad", "train.max_epochs=100000"),
            "--run-dir",
            str(run),
        ],
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A suite started in the background of a non-interactive shell ignores SIGINT, and
        # children inherit that: give the child Ctrl-C's default behaviour.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 240
    ev_path = run / "facts" / "events.jsonl"
    while time.time() < deadline:
        if ev_path.is_file() and ev_path.read_text().count('"epoch_end"') >= 2:
            break
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert f"chipvi train --resume {run}" in err and "Traceback" not in err
    assert (run / "checkpoints" / "last.ckpt").is_file()
    ev = events(run)
    assert ev[-1]["event"] == "interrupted"
    assert any(e["event"] == "epoch_end" for e in ev)


def test_multirun_makes_one_run_per_value(sweep_runs):
    for weight, run in sweep_runs.items():
        assert run.name.endswith(f"_full_consistency_weight={weight:g}")
        assert (run / "model" / "model.pt").is_file()
        assert yaml.safe_load((run / "config.yaml").read_text())["sweep"] == {}
    # different consistency weights are different runs of the same seed: same first loss
    first = [events(r)[1]["losses"]["elbo_train"] for r in sweep_runs.values()]
    assert first[0] == pytest.approx(first[1])


def test_load_runs_and_report(sweep_runs, work, capsys):
    from chipvi.io import load_runs

    facts = load_runs(work / "sweep")
    runs = facts["runs"]
    assert list(runs.index) == sorted(r.name for r in sweep_runs.values())
    assert (runs["status"] == "finished").all() and (runs["epochs"] == EPOCHS).all()
    assert sorted(runs["config.model.consistency_weight"]) == [1.0, 10.0]
    scalars = facts["scalars"]
    assert len(scalars) == 2 * EPOCHS and set(scalars["run"]) == set(runs.index)
    ev = facts["events"]
    assert (ev["event"] == "epoch_end").sum() == 2 * EPOCHS
    assert "losses.elbo_train" in ev.columns
    assert set(facts["meta"]["seed"]) == {0}

    out = work / "report"
    status, err = run_main(capsys, "report", *sweep_runs.values(), "-o", out, "-q")
    assert status == 0, err
    for name in ("runs.csv", "config_diff.csv", "scalars.csv", "losses.png"):
        assert (out / name).is_file(), name
    import pandas as pd

    diff = pd.read_csv(out / "config_diff.csv", index_col=0)
    assert list(diff.columns) == ["model.consistency_weight"]
    table = pd.read_csv(out / "runs.csv", index_col=0)
    assert table["final_elbo"].to_dict() == pytest.approx(runs["final_elbo"].to_dict())
    status, err = run_main(capsys, "report", *sweep_runs.values(), "-o", out)
    assert status == 2 and "already exists" in err
    status, err = run_main(capsys, "report", work / "tiny.h5ad", "-o", work / "r2")
    assert status == 2 and "neither a run directory" in err and not (work / "r2").exists()
