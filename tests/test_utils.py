import gc
import os
import stat
from pathlib import Path

import pytest

from chipvi._errors import ChipviInputError
from chipvi._utils import atomic_path, gc_paused


def test_atomic_path_writes_with_umask_permissions(tmp_path):
    out = tmp_path / "x.txt"
    with atomic_path(out) as tmp:
        tmp.write_text("hello")
    assert out.read_text() == "hello"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["x.txt"]


def test_atomic_path_refuses_existing_and_cleans_up_on_error(tmp_path):
    out = tmp_path / "x.txt"
    out.write_text("old")
    with pytest.raises(ChipviInputError, match="overwrite=True"):
        with atomic_path(out):
            pass
    with pytest.raises(RuntimeError):
        with atomic_path(out, overwrite=True) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert out.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.txt"]


def test_atomic_path_missing_folder(tmp_path):
    with pytest.raises(ChipviInputError, match="does not exist"):
        with atomic_path(tmp_path / "nope" / "x.txt"):
            pass


def test_gc_paused_restores_the_collector_state():
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the inner use found it disabled: leaves it so
    assert gc.isenabled()
    with pytest.raises(RuntimeError):
        with gc_paused():
            raise RuntimeError("boom")
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()  # a caller that had disabled it keeps it disabled
    finally:
        gc.enable()


def test_binning_leaves_the_collector_enabled(tmp_path):
    from chipvi.datasets import simulate
    from chipvi.io import read_bam_bins

    sim = simulate(tmp_path, seed=0, chrom_sizes={"chr1": 200_000}, depths=(2000, 2000))
    bam = next(Path(sim.samplesheet).parent.glob("*.bam"))
    read_bam_bins(bam, 200, threads=2)
    assert gc.isenabled()
