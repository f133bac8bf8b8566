"""Fault injection: killed writers and concurrent writers never leave a partial output in place.

A process killed with SIGKILL runs no cleanup, so completeness must come from how outputs are
published (a temporary name renamed into place, exclusively when not overwriting).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import anndata as ad
import pytest

from chipvi._utils import OutputExistsError, atomic_dir, atomic_path
from chipvi.datasets import cssq_chr19_samplesheet
from chipvi.io import RunDir


def test_atomic_path_does_not_replace_a_file_that_appeared_meanwhile(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(OutputExistsError, match="appeared while it was being written"):
        with atomic_path(target) as tmp:
            tmp.write_text("mine")
            target.write_text("theirs")  # another process finished first
    assert target.read_text() == "theirs"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_dir_does_not_replace_a_folder_that_appeared_meanwhile(tmp_path):
    target = tmp_path / "run"
    with pytest.raises(OutputExistsError):
        with atomic_dir(target) as tmp:
            (tmp / "mine").touch()
            target.mkdir()
            (target / "theirs").touch()
    assert [p.name for p in target.iterdir()] == ["theirs"]
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def _create_run(args) -> str:
    base, barrier = args
    barrier.wait()  # all processes create at the same moment
    run = RunDir.create(Path(base), "name: same\n", unique=True)
    (run.path / "owner").write_text(str(os.getpid()))
    return str(run.path)


def test_runs_started_together_get_distinct_folders(tmp_path):
    n = 6
    base = tmp_path / "runs" / "2026-12-06_12-00-00_same"
    with mp.Manager() as manager:
        barrier = manager.Barrier(n)
        with mp.get_context("fork").Pool(n) as pool:
            paths = pool.map(_create_run, [(str(base), barrier)] * n)
    assert len(set(paths)) == n
    assert sorted(Path(p).name for p in paths) == sorted(
        [base.name] + [f"{base.name}_{i}" for i in range(2, n + 1)]
    )
    owners = {(Path(p) / "owner").read_text() for p in paths}
    assert len(owners) == n  # nobody's folder was replaced by another's
    assert sorted(p.name for p in base.parent.iterdir()) == sorted(Path(p).name for p in paths)


def test_named_run_folder_that_exists_is_refused(tmp_path):
    RunDir.create(tmp_path / "run", "a: 1\n")
    with pytest.raises(Exception, match="already exists; pass --overwrite"):
        RunDir.create(tmp_path / "run", "a: 2\n")
    assert (tmp_path / "run" / "config.yaml").read_text() == "a: 1\n"


def test_sigkill_during_binning_never_leaves_a_partial_output(tmp_path):
    """`chipvi bin` killed at several moments of a run: the output is absent or complete, and
    a rerun without --overwrite then succeeds (nothing left behind blocks or poses as it)."""
    sheet = cssq_chr19_samplesheet()
    out = tmp_path / "bins.h5ad"
    cmd = [
        sys.executable,
        "-m",
        "chipvi",
        "bin",
        str(sheet),
        "-o",
        str(out),
        "-q",
        "--chroms",
        "chr19",
    ]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=300)
    whole = time.perf_counter() - t0
    out.unlink()
    killed = 0
    for fraction in (0.3, 0.6, 0.8, 0.9, 0.97):
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(fraction * whole)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        proc.wait()
        if out.exists():  # finished before the kill: it must be whole
            assert ad.read_h5ad(out).n_obs > 0
            out.unlink()
    assert killed >= 2, "binning finished before the kills; the test did not test anything"
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    adata = ad.read_h5ad(out)
    assert adata.n_vars == 4 and adata.X.sum() > 0
    # What a kill can leave is a hidden temporary file, never a file under the output's name.
    assert all(p.name.startswith(".bins.h5ad.") for p in tmp_path.iterdir() if p != out)
