import os
import stat

import pytest

from chipvi._errors import ChipviInputError
from chipvi._utils import atomic_path


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
