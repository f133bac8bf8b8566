"""Provenance of a run: file fingerprints, git commit, software versions, wall time.

The run folder itself (layout, fact writers and readers) is :class:`chipvi.io.RunDir`.
"""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from ..io import RunDir as RunDir  # noqa: F401  (the cli's run folder type, defined in io)
from ..io import timestamped_name as timestamped_name  # noqa: F401


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def git_commit(start: Path | None = None) -> str | None:
    """Commit of the chipvi source checkout (``+dirty`` when modified), or None."""
    start = start or Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(start), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if out.returncode != 0:
            return None
        commit = out.stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(start), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def software_versions() -> dict[str, str]:
    """Versions of chipvi and the packages that decide its numbers."""
    from importlib import metadata

    from .. import __version__

    versions = {
        "chipvi": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }
    for dist in (
        "torch",
        "pyro-ppl",
        "scvi-tools",
        "lightning",
        "anndata",
        "numpy",
        "pandas",
        "scipy",
        "pysam",
        "omegaconf",
    ):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return versions


class Timer:
    """Wall time since construction."""

    def __init__(self):
        self.t0 = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0
