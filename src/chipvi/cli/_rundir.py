"""Run directories: layout, facts (events, scalars, meta) and their writers.

Layout of ``outputs/runs/<YYYY-MM-DD_HH-MM-SS>_<name>/``::

    config.yaml            the resolved config the run used
    facts/events.jsonl     one JSON object per line: run_start, epoch_end (all loss terms),
                           train_end, resume, interrupted, error, run_end
    facts/scalars.csv      epoch, split, one column per loss term, epoch_time_s, bins_per_s
    facts/meta.json        software versions, data fingerprints (sha256), seed, git commit
    checkpoints/last.ckpt  Lightning checkpoint + Pyro optimiser state after the last epoch
    model/                 the trained model's ``save``
    figures/               PNGs written by later commands
    data.h5ad              the binned data, when the run binned a sample sheet itself

Nothing here imports torch: :func:`chipvi.io.load_runs` reads these files back.
"""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .._errors import ChipviInputError

FACTS = "facts"
EVENTS = "events.jsonl"
SCALARS = "scalars.csv"
META = "meta.json"
CHECKPOINT = Path("checkpoints") / "last.ckpt"
SCALAR_FIXED = ["epoch", "split"]
SCALAR_TAIL = ["epoch_time_s", "bins_per_s"]


def timestamped_name(name: str, now: _dt.datetime | None = None) -> str:
    """``2026-01-31_12-00-00_<name>``."""
    now = now or _dt.datetime.now()
    return f"{now:%Y-%m-%d_%H-%M-%S}_{name}"


class RunDir:
    """Paths and fact writers of one run directory."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    @property
    def facts(self) -> Path:
        return self.path / FACTS

    @property
    def events_path(self) -> Path:
        return self.facts / EVENTS

    @property
    def scalars_path(self) -> Path:
        return self.facts / SCALARS

    @property
    def meta_path(self) -> Path:
        return self.facts / META

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def checkpoint_path(self) -> Path:
        return self.path / CHECKPOINT

    @property
    def model_dir(self) -> Path:
        return self.path / "model"

    @property
    def figures(self) -> Path:
        return self.path / "figures"

    @property
    def data_path(self) -> Path:
        return self.path / "data.h5ad"

    # -- creation ---------------------------------------------------------------------------
    @classmethod
    def create(cls, path: Path, config_yaml: str, *, overwrite: bool = False) -> RunDir:
        """Make the folder tree and write ``config.yaml`` (refuses an existing run)."""
        path = Path(path)
        if path.exists():
            if not overwrite:
                raise ChipviInputError(
                    f"Run directory {path} already exists; pass --overwrite to replace it or "
                    f"--resume {path} to continue it."
                )
            shutil.rmtree(path)
        tmp = path.with_name(f".{path.name}.creating")
        if tmp.exists():
            shutil.rmtree(tmp)
        (tmp / FACTS).mkdir(parents=True)
        (tmp / "figures").mkdir()
        (tmp / "checkpoints").mkdir()
        (tmp / "config.yaml").write_text(config_yaml)
        (tmp / FACTS / EVENTS).touch()
        os.replace(tmp, path)
        return cls(path)

    def require_existing(self) -> RunDir:
        if not self.config_path.is_file():
            raise ChipviInputError(
                f"{self.path} is not a chipvi run directory (no config.yaml); give the folder "
                "that `chipvi train` created under outputs/runs/."
            )
        return self

    # -- facts ------------------------------------------------------------------------------
    def event(self, kind: str, **fields: Any) -> dict:
        """Append one event line (flushed at once so a killed process keeps it)."""
        record = {"event": kind, "time": _dt.datetime.now().isoformat(timespec="milliseconds")}
        record.update(fields)
        with open(self.events_path, "a") as fh:
            fh.write(json.dumps(record, default=_json_default) + "\n")
            fh.flush()
        return record

    def read_events(self) -> list[dict]:
        if not self.events_path.is_file():
            return []
        return [
            json.loads(line) for line in self.events_path.read_text().splitlines() if line.strip()
        ]

    def append_scalars(self, rows: list[dict]) -> None:
        """Append rows to ``scalars.csv``; a new loss term rewrites the header for all rows."""
        if not rows:
            return
        old_rows, header = self.read_scalars_raw()
        terms = [k for r in old_rows + rows for k in r if k not in SCALAR_FIXED + SCALAR_TAIL]
        columns = SCALAR_FIXED + list(dict.fromkeys(terms)) + SCALAR_TAIL
        if header == columns:
            with open(self.scalars_path, "a", newline="") as fh:
                csv.DictWriter(fh, columns).writerows(rows)
        else:
            self._write_scalars(old_rows + rows, columns)

    def read_scalars_raw(self) -> tuple[list[dict], list[str]]:
        if not self.scalars_path.is_file():
            return [], []
        with open(self.scalars_path, newline="") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            return rows, list(reader.fieldnames or [])

    def truncate_scalars(self, last_epoch: int) -> None:
        """Drop rows after ``last_epoch`` (a killed run may have logged past its checkpoint)."""
        rows, header = self.read_scalars_raw()
        keep = [r for r in rows if int(r["epoch"]) <= last_epoch]
        if len(keep) != len(rows):
            self._write_scalars(keep, header)

    def _write_scalars(self, rows: list[dict], columns: list[str]) -> None:
        tmp = self.scalars_path.with_suffix(".csv.part")
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, columns, restval="")
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.scalars_path)

    def write_meta(self, meta: dict) -> None:
        tmp = self.meta_path.with_suffix(".json.part")
        tmp.write_text(json.dumps(meta, indent=2, default=_json_default) + "\n")
        os.replace(tmp, self.meta_path)

    def read_meta(self) -> dict:
        return json.loads(self.meta_path.read_text()) if self.meta_path.is_file() else {}


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)


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
