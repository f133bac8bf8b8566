"""Fault injection: killed writers and concurrent writers never leave a partial output in place.

A process killed with SIGKILL runs no cleanup, so completeness must come from how outputs are
published (a temporary name renamed into place, exclusively when not overwriting).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
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


def test_events_of_a_killed_run_leave_out_its_torn_last_line(tmp_path):
    from chipvi import ChipviInputError

    run = RunDir.create(tmp_path / "run", "a: 1\n")
    run.event("train_start", epochs=3)
    run.event("epoch", epoch=0)
    with open(run.events_path, "a") as fh:  # killed half-way through a record
        fh.write('{"event": "epoch", "ep')
    assert [e["event"] for e in run.read_events()] == ["train_start", "epoch"]
    run.event("resume", epoch=1)  # the next record does not glue onto the torn one
    assert [e["event"] for e in run.read_events()] == ["train_start", "epoch", "resume"]
    assert run.events_path.read_text().count("\n") == 3
    text = run.events_path.read_text().split("\n")
    run.events_path.write_text("\n".join([text[0], "not json", *text[1:]]))
    with pytest.raises(ChipviInputError, match="line 2 is not a JSON event"):
        run.read_events()


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
    left = sorted(tmp_path.iterdir())  # what the kills left (never bins.h5ad itself)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert all(f"'{p}'" in done.stderr for p in left)  # the rerun names each, to delete
    adata = ad.read_h5ad(out)
    assert adata.n_vars == 4 and adata.X.sum() > 0
    # What a kill can leave is a hidden temporary file, never a file under the output's name.
    assert all(p.name.startswith(".bins.h5ad.") for p in tmp_path.iterdir() if p != out)


# ------------------------------------------------------------------ killed at every step
def _snapshot(path: Path):
    """What a reader finds at ``path``: None (absent) or {file name: text}."""
    if not path.exists():
        return None
    return {p.name: p.read_text() for p in sorted(path.iterdir())}


def _kill_at(step: int, target: Path, overwrite: bool) -> None:
    """In a forked child: replace ``target`` by atomic_dir and SIGKILL the process just before
    its ``step``-th file-system operation (0: while the new folder is being filled)."""
    import chipvi._utils as utils

    calls = {"n": 0}

    def before(fn):
        def wrapped(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == step:
                os.kill(os.getpid(), signal.SIGKILL)
            return fn(*args, **kwargs)

        return wrapped

    for name in ("rename", "replace", "link"):
        setattr(utils.os, name, before(getattr(os, name)))
    utils.shutil.rmtree = before(shutil.rmtree)
    with atomic_dir(target, overwrite=overwrite) as tmp:
        (tmp / "a.txt").write_text("new a")
        if step == 0:
            os.kill(os.getpid(), signal.SIGKILL)
        (tmp / "c.txt").write_text("new c")


@pytest.mark.parametrize("overwrite", [False, True])
def test_atomic_dir_killed_at_any_step_leaves_old_new_or_nothing(tmp_path, overwrite):
    """SIGKILL before each rename/link/rmtree of a folder write (and while it is filled):
    the folder is then the whole old one, the whole new one, or (between moving the old one
    aside and renaming the new one in) absent; never half deleted or half written. What the
    killed writer left is found by ``leftovers`` and named by the next write's warning."""
    from chipvi._utils import leftovers

    old = {"a.txt": "old a", "b.txt": "old b"}
    new = {"a.txt": "new a", "c.txt": "new c"}
    outcomes = set()
    for step in range(0, 8):
        target = tmp_path / f"step{step}" / "out"
        target.parent.mkdir()
        if overwrite:
            target.mkdir()
            for name, text in old.items():
                (target / name).write_text(text)
        child = mp.get_context("fork").Process(target=_kill_at, args=(step, target, overwrite))
        child.start()
        child.join()
        state = _snapshot(target)
        allowed = [new, None] + ([old] if overwrite else [])
        assert state in allowed, (step, state)
        if child.exitcode == 0:  # finished before the step: the new folder, nothing left
            assert state == new and leftovers(target) == []
            break
        assert child.exitcode == -signal.SIGKILL
        outcomes.add("old" if state == old else "new" if state == new else "absent")
        left = leftovers(target)
        assert left and all(p.name.startswith(".out.") for p in left)
        assert sorted(target.parent.iterdir()) == sorted(left + ([target] if state else []))
        if state is None and overwrite:  # the old folder, whole, is among the leftovers
            assert any(_snapshot(p) == old for p in left if p.name.endswith(".old"))
        with pytest.warns(UserWarning, match="was killed before it finished") as record:
            with atomic_dir(target, overwrite=True) as tmp:
                (tmp / "d.txt").write_text("d")
        message = str(record[0].message)
        assert all(f"'{p}'" in message for p in left)
    assert step > 0, "no step was reached"
    assert outcomes >= ({"old", "absent", "new"} if overwrite else {"absent"})


def test_leftovers_of_a_live_writer_are_not_reported(tmp_path):
    target = tmp_path / "out.h5ad"
    with atomic_path(target) as tmp:
        assert tmp.name.startswith(".out.h5ad.") and tmp.name.endswith(f".{os.getpid()}.part")
        from chipvi._utils import leftovers

        assert leftovers(target) == []  # our own, still being written
    dead = tmp_path / ".out.h5ad.abc123.999999999.part"  # no such process
    dead.write_text("half")
    assert leftovers(target) == [dead]


# ------------------------------------------------------------------ chipvi denoise / download
ROOT = Path(__file__).resolve().parents[1]


def _env(**extra) -> dict:
    return dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), **extra)


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 180.0) -> bool:
    """SIGKILL ``proc`` as soon as ``ready()`` holds; False if it ended first."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if ready():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.002)
    proc.kill()
    raise AssertionError("the trigger never came")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A real ChIPVI run, two epochs on 4,000 bins (2 groups x 2 replicates)."""
    from _cli_fake_model import tiny_adata
    from chipvi.cli import main

    work = tmp_path_factory.mktemp("denoise")
    tiny_adata(n_bins=4000, seed=1).write_h5ad(work / "bins.h5ad")
    run = work / "run"
    args = ["train", "--config-dir", str(ROOT / "src" / "chipvi" / "configs"), "-q"]
    args += ["--run-dir", str(run), "data.samplesheet=null", f"data.h5ad={work / 'bins.h5ad'}"]
    args += ["data.region=null", "data.chroms=null", "train.max_epochs=2", "model.n_hidden=8"]
    assert main([*args, "train.threads=1"]) == 0
    return run


def test_sigkill_during_denoise_never_leaves_a_partial_output(trained_run):
    """`chipvi denoise` killed while it writes: no denoised/ folder; the next run says which
    leftovers to delete and succeeds."""
    from chipvi.cli import main

    run = trained_run
    out = run / "denoised"
    cmd = [sys.executable, "-m", "chipvi", "denoise", str(run), "-q"]

    def writing() -> bool:  # the output folder is being filled under its temporary name
        return any(run.glob(".denoised.*.part"))

    proc = subprocess.Popen(cmd, env=_env(), stderr=subprocess.DEVNULL)
    assert _kill_when(proc, writing), "denoise ended before the kill"
    assert not out.exists()
    (left,) = run.glob(".denoised.*")

    with pytest.warns(UserWarning, match="was killed before it finished") as record:
        assert main(["denoise", str(run), "-q"]) == 0
    assert f"rm -r '{left}'" in str(record[0].message)  # exactly what to delete
    adata = ad.read_h5ad(out / "denoised.h5ad")
    assert "chipvi_lfe" in adata.layers and adata.n_obs == 4000
    tracks = sorted(p.name for p in (out / "tracks").iterdir())
    assert tracks == ["A.log2_fold_enrichment.bw", "B.log2_fold_enrichment.bw"]

    # (--overwrite goes through the same atomic_dir, whose replacement step is killed at
    # every point in test_atomic_dir_killed_at_any_step_leaves_old_new_or_nothing.)


def test_sigkill_during_download_never_publishes_a_partial_file(portal, tmp_path):
    """`chipvi download` killed while a file is in transfer: that file exists only as
    `<name>.part` (never under its own name), no sample sheet is written, and the next run
    completes every file with its md5 checked."""
    import hashlib

    stalled = "ENCFF912CCC.bam"
    portal.fault(stalled, ("stall_body", 2000, 120))  # 2,000 of 3,662 bytes, then silence
    cmd = [sys.executable, "-m", "chipvi", "download", "--experiment", "ENCSR300SSS"]
    cmd += ["--out", str(tmp_path), "--retries", "0", "--timeout", "300", "--threads", "4", "-q"]
    env = _env(CHIPVI_ENCODE_URL=portal.url, NO_PROXY="127.0.0.1,localhost")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def in_transfer():
        others = [p for p in tmp_path.glob("*.bam") if p.name != stalled]
        return (tmp_path / f"{stalled}.part").is_file() and len(others) == 3

    assert _kill_when(proc, in_transfer), "the download ended before the kill"
    assert not (tmp_path / stalled).exists()
    assert not (tmp_path / "samplesheet.csv").exists()
    part = (tmp_path / f"{stalled}.part").read_bytes()
    assert len(part) < len(portal.blobs[stalled])
    assert portal.blobs[stalled].startswith(part)  # what arrived, never anything else

    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for name, blob in portal.blobs.items():
        path = tmp_path / name
        if path.exists():
            assert hashlib.md5(path.read_bytes()).digest() == hashlib.md5(blob).digest()
    assert (tmp_path / stalled).read_bytes() == portal.blobs[stalled]
    assert not list(tmp_path.glob("*.part")) and (tmp_path / "samplesheet.csv").is_file()
    requests = portal.requests("storage", stalled)
    assert len(requests) == 2 and requests[-1]["range"] == (f"bytes={len(part)}-" if part else None)


def test_atomic_dir_puts_the_old_folder_back_when_publishing_fails(tmp_path, monkeypatch):
    import chipvi._utils as utils

    target = tmp_path / "out"
    target.mkdir()
    (target / "a.txt").write_text("old")

    def refuse(tmp, path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(utils, "_publish_new", refuse)
    with pytest.raises(PermissionError):
        with atomic_dir(target, overwrite=True) as tmp:
            (tmp / "a.txt").write_text("new")
    assert (target / "a.txt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # nothing else left
