import gc
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from chipvi import _utils
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


def test_check_int_bounds_and_types():
    from chipvi._utils import check_int

    assert check_int("n", np.int64(3), 1) == 3 and type(check_int("n", np.int64(3), 1)) is int
    assert check_int("q", 255, 0, 255) == 255
    with pytest.raises(ChipviInputError, match=r"q must be between 0 and 255, got 256"):
        check_int("q", 256, 0, 255)
    with pytest.raises(ChipviInputError, match=r"n must be >= 1, got 0"):
        check_int("n", 0, 1)
    for bad in (True, 2.0, "2", None):
        with pytest.raises(ChipviInputError, match="n must be an integer"):
            check_int("n", bad, 1)


def test_atomic_dir_moves_a_finished_folder_and_removes_a_failed_one(tmp_path):
    from chipvi._utils import atomic_dir

    out = tmp_path / "out"
    with atomic_dir(out) as tmp:
        assert tmp.parent == tmp_path and tmp != out
        (tmp / "a.txt").write_text("one")
    assert (out / "a.txt").read_text() == "one"
    with pytest.raises(ChipviInputError, match="already exists"):
        with atomic_dir(out):
            pass
    with pytest.raises(RuntimeError):
        with atomic_dir(out, overwrite=True) as tmp:
            (tmp / "b.txt").write_text("two")
            raise RuntimeError("writer failed")
    # The failed write left the old folder as it was and no temporary folder behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert sorted(p.name for p in out.iterdir()) == ["a.txt"]
    with atomic_dir(out, overwrite=True) as tmp:
        (tmp / "b.txt").write_text("two")
    assert sorted(p.name for p in out.iterdir()) == ["b.txt"]
    with pytest.raises(ChipviInputError, match="does not exist"):
        with atomic_dir(tmp_path / "missing" / "out"):
            pass


_FRAGMENTED_HEAP = """
import os
import numpy as np
from chipvi._utils import release_freed_memory

def resident():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

# ~190 MiB of arrays below the mmap threshold, each followed by a small one that stays:
# freeing the large ones leaves holes glibc keeps until it is asked to trim.
big, keep = [], []
for i in range(2000):
    big.append(np.ones(12_000 + i % 7 * 100))
    keep.append(np.ones(512))  # 4 KiB: malloc, not numpy's cache of small buffers
del big
held = resident()
release_freed_memory()
print(held - resident(), len(keep))
"""


@pytest.mark.skipif(_utils._malloc_trim() is None, reason="needs glibc's malloc_trim")
def test_release_freed_memory_returns_fragmented_heap_pages():
    # In a fresh interpreter: the test process's heap (its mmap threshold, raised by earlier
    # tests' large frees) would decide where the arrays live.
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", _FRAGMENTED_HEAP], capture_output=True, text=True, check=True
    ).stdout.split()
    assert int(out[0]) > 100 * 2**20, out
    assert out[1] == "2000"
