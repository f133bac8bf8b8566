"""Small helpers shared across subpackages (no torch imports here)."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import gc
import os
import re
import shutil
import sys
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from numbers import Integral
from pathlib import Path

from ._errors import ChipviInputError


class OutputExistsError(ChipviInputError):
    """An output path exists that must not be replaced (there before the write, or made by
    another process while it ran)."""


def _output(path: str | os.PathLike, overwrite: bool) -> tuple[Path, Path]:
    """``(path, its folder)`` for an atomic write, after the checks both writers share."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} already exists; pass overwrite=True to replace it.")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise ChipviInputError(f"Output folder {parent} does not exist; create it first.")
    _warn_leftovers(path, parent)
    return path, parent


def _temporary_name(path: Path, kind: str) -> tuple[str, str]:
    """``(prefix, suffix)`` of a temporary next to ``path``: ``.<name>.<random>.<pid>.<kind>``.

    The writer's process id in the name tells a leftover of a killed writer from the
    temporary of one still running (:func:`leftovers`).
    """
    return f".{path.name}.", f".{os.getpid()}.{kind}"


def leftovers(path: str | os.PathLike) -> list[Path]:
    """Temporaries of ``path`` left by writers that were killed (their process is gone).

    A process killed with SIGKILL runs no cleanup: its half-written temporary (``.part``) or
    the previous output it had moved aside (``.old``) stays next to ``path`` under a hidden
    name. They are never read as ``path``; this finds them so that the next run can say what
    to delete. Temporaries of live processes (on this machine) are not listed.
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    pattern = re.compile(rf"\.{re.escape(path.name)}\.[A-Za-z0-9_]+\.(\d+)\.(part|old)")
    try:
        names = os.listdir(parent)
    except OSError:
        return []
    found = []
    for name in names:
        match = pattern.fullmatch(name)
        if match and not _alive(int(match.group(1))):
            found.append(parent / name)
    return sorted(found)


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (someone else's counts)."""
    if pid == os.getpid() or os.name != "posix":
        return True  # (os.kill(pid, 0) would terminate the process on Windows)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists but belongs to another user
        return True
    return True


def _warn_leftovers(path: Path, parent: Path) -> None:
    found = leftovers(path)
    if found:
        listing = " ".join(f"'{p}'" for p in found)
        warnings.warn(
            f"An earlier write of {path} was killed before it finished and left "
            f"{len(found)} temporary file(s) or folder(s), never read as {path.name}; "
            f"delete them to free the space: rm -r {listing}",
            UserWarning,
            stacklevel=5,  # the caller's `with atomic_...` line
        )


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
    path, parent = _output(path, overwrite)
    prefix, suffix = _temporary_name(path, "part")
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates the file private (0600); give the output the usual umask permissions.
        if tmp_path.exists():
            os.chmod(tmp_path, _umask_mode(0o666))
        if overwrite:
            os.replace(tmp_path, path)
        else:
            _publish_new(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _publish_new(tmp: Path, path: Path) -> None:
    """Rename ``tmp`` onto ``path`` only if ``path`` does not exist (atomic test-and-set).

    Another process may create ``path`` while we write (two runs started in the same second):
    a file is published by a hard link, which fails on an existing name, and a folder by a
    rename, which fails on an existing non-empty folder, so neither replaces the other's work.
    """
    taken = OutputExistsError(f"{path} appeared while it was being written; nothing was replaced.")
    try:
        if tmp.is_dir():
            if path.exists() or path.is_symlink():
                raise taken
            os.rename(tmp, path)
            return
        os.link(tmp, path)
    except FileExistsError as err:
        raise taken from err
    except OSError as err:
        if err.errno == errno.ENOTEMPTY:
            raise taken from err
        if tmp.is_dir() or err.errno not in (errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EMLINK):
            raise
        # A file system without hard links: the check and the rename are then two steps.
        if path.exists():
            raise taken from err
        os.replace(tmp, path)
        return
    tmp.unlink()


def _umask_mode(mode: int) -> int:
    """``mode`` under the process umask (mkstemp/mkdtemp create outputs private)."""
    umask = os.umask(0)
    os.umask(umask)
    return mode & ~umask


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder next to ``path`` and move it onto ``path`` on success.

    The folder counterpart of :func:`atomic_path`: writers fill the yielded folder; if the body
    raises, it is removed and ``path`` is left untouched. With ``overwrite`` an existing
    ``path`` is first renamed aside, the new folder renamed into place, and only then the old
    one removed (a folder cannot be replaced in one step): a process killed at any moment
    leaves ``path`` complete, old or new, or absent, never half deleted.

    Parameters
    ----------
    path
        Final folder.
    overwrite
        Replace an existing ``path``; otherwise an existing one is an error.
    """
    path, parent = _output(path, overwrite)
    prefix, suffix = _temporary_name(path, "part")
    tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=parent))
    old = None
    try:
        yield tmp
        os.chmod(tmp, _umask_mode(0o777))
        if overwrite and (path.exists() or path.is_symlink()):
            prefix, suffix = _temporary_name(path, "old")
            old = parent / f"{prefix}{uuid.uuid4().hex[:12]}{suffix}"
            os.rename(path, old)
        try:
            _publish_new(tmp, path)
        except BaseException:
            if old is not None and not (path.exists() or path.is_symlink()):
                os.rename(old, path)  # nothing replaced it: the previous output goes back
                old = None
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
        if old is not None:
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old)
            else:
                old.unlink(missing_ok=True)


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


@functools.cache
def _malloc_trim():
    """glibc's ``malloc_trim``, or None where the C library has none (macOS, musl)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        trim = ctypes.CDLL(None).malloc_trim  # the C library this process runs on
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def release_freed_memory() -> None:
    """Hand the heap pages freed so far back to the operating system (glibc ``malloc_trim``;
    nothing where the C library has no such call).

    A loop whose steps allocate and free large arrays of varying sizes (training minibatches:
    it is called after each step) leaves glibc's arenas holding freed, fragmented pages, so the
    resident memory of a long loop creeps up with the number of steps although nothing is kept. Measured over one
    training epoch of a 10 M-bin x 4 store: RSS flat at 930-943 MiB with a call after each
    step. A call costs well under a millisecond.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def check_int(name: str, value, minimum: int, maximum: int | None = None) -> int:
    """``value`` as an int if it is an integer (not a bool) in ``[minimum, maximum]``.

    Raises
    ------
    ChipviInputError
        Naming ``name``, the bound and the value given.
    """
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ChipviInputError(f"{name} must be an integer, got {value!r}.")
    value = int(value)
    if value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise ChipviInputError(f"{name} must be {bound}, got {value}.")
    return value


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
