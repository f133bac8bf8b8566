"""Small helpers shared across subpackages (no torch imports here)."""

from __future__ import annotations

import contextlib
import gc
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ._errors import ChipviInputError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` and rename it onto ``path`` on success.

    Writers write to the yielded path; if the body raises, the temporary file is removed and
    ``path`` is left untouched, so no caller ever leaves a half-written output.

    Parameters
    ----------
    path
        Final destination.
    overwrite
        Replace an existing ``path``; otherwise an existing file is an error.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise ChipviInputError(f"{path} already exists; pass overwrite=True to replace it.")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise ChipviInputError(f"Output folder {parent} does not exist; create it first.")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates the file private (0600); give the output the usual umask permissions.
        umask = os.umask(0)
        os.umask(umask)
        if tmp_path.exists():
            os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder next to ``path`` and move it onto ``path`` on success.

    The folder's files appear together or not at all: if the body raises, the temporary
    folder is removed and ``path`` (an earlier result, say) is left as it was.

    Parameters
    ----------
    path
        Final folder.
    overwrite
        Replace an existing ``path``; otherwise an existing one is an error (checked first).
    """
    import shutil

    path = Path(path)
    if path.exists() and not overwrite:
        raise ChipviInputError(f"{path} already exists; pass --overwrite to replace it.")
    tmp = path.with_name(f".{path.name}.part")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        tmp.rename(path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector for the body; its state is restored after.

    For work that allocates many objects but no garbage cycles, such as the first binning
    call of a process, where the imports of pandas and anndata and numba's compiler set-up
    trigger full collections that walk every loaded module's objects (~0.2-0.3 s measured)
    while reclaiming almost nothing. Reference counting still frees everything as usual.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        # Only the caller that found it enabled turns it back on: nested uses end with it
        # enabled, and a caller that had disabled it keeps it disabled.
        if enabled:
            gc.enable()


def parse_max_per_position(text: str) -> int | str | None:
    """A command-line value of ``max_per_position``: ``"auto"``, ``"none"`` or an integer."""
    if text in ("auto", "none"):
        return None if text == "none" else text
    try:
        return int(text)
    except ValueError:
        raise ChipviInputError(
            f"max_per_position must be an integer, 'auto' or 'none', got {text!r}."
        ) from None
