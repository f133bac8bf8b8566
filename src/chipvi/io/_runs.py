"""Run folders of ``chipvi train``: one type, :class:`RunDir`, writes and reads them.

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

:func:`load_runs` reads runs back as DataFrames (for notebooks and ``chipvi report``). Nothing
here imports torch.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from .._errors import ChipviInputError
from .._utils import OutputExistsError, atomic_dir, atomic_path

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
    def create(
        cls, path: Path, config_yaml: str, *, overwrite: bool = False, unique: bool = False
    ) -> RunDir:
        """Make the folder tree and write ``config.yaml`` (refuses an existing run).

        The folder appears complete or not at all. With ``unique`` (automatically named runs)
        a name taken by another process, even one that takes it while this folder is being
        written, moves this run to ``<name>_2``, ``<name>_3``, ...: two processes started in
        the same second never share or replace a run folder.
        """
        path = Path(path)
        for i in range(1, 1000 if unique and not overwrite else 2):
            candidate = path if i == 1 else path.with_name(f"{path.name}_{i}")
            candidate.parent.mkdir(parents=True, exist_ok=True)
            try:  # atomic_dir refuses a name taken before or while the folder is written
                with atomic_dir(candidate, overwrite=overwrite) as tmp:
                    (tmp / FACTS).mkdir()
                    (tmp / "figures").mkdir()
                    (tmp / "checkpoints").mkdir()
                    (tmp / "config.yaml").write_text(config_yaml)
                    (tmp / FACTS / EVENTS).touch()
            except OutputExistsError:
                if unique:
                    continue
                raise ChipviInputError(
                    f"Run directory {candidate} already exists; pass --overwrite to replace it "
                    f"or --resume {candidate} to continue it."
                ) from None
            return cls(candidate)
        raise ChipviInputError(f"No free run directory name next to {path}; choose --run-dir.")

    def is_run(self) -> bool:
        """Whether the folder holds a run (``config.yaml`` and ``facts/``)."""
        return self.config_path.is_file() and self.facts.is_dir()

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
        with open(self.events_path, "a+b") as fh:
            _drop_torn_line(fh)
            fh.write((json.dumps(record, default=_json_default) + "\n").encode())
            fh.flush()
        return record

    def read_events(self) -> list[dict]:
        """The events in order. A last line without its newline is the half-written record
        of a killed process: left out. Any other line that is not JSON is an error."""
        if not self.events_path.is_file():
            return []
        lines = self.events_path.read_text().split("\n")
        events = []
        for number, line in enumerate(lines[:-1], 1):  # lines[-1]: "" or a torn record
            if not line.strip():
                continue
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ChipviInputError(
                    f"{self.events_path} line {number} is not a JSON event ({e}); the file was "
                    "edited or damaged: remove that line."
                ) from None
        return events

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
        with (
            atomic_path(self.scalars_path, overwrite=True) as tmp,
            open(tmp, "w", newline="") as fh,
        ):
            writer = csv.DictWriter(fh, columns, restval="")
            writer.writeheader()
            writer.writerows(rows)

    def write_meta(self, meta: dict) -> None:
        with atomic_path(self.meta_path, overwrite=True) as tmp:
            tmp.write_text(json.dumps(meta, indent=2, default=_json_default) + "\n")

    def read_meta(self) -> dict:
        return json.loads(self.meta_path.read_text()) if self.meta_path.is_file() else {}


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)


def _find_runs(paths: Iterable[str | os.PathLike]) -> list[Path]:
    runs: list[Path] = []
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise ChipviInputError(f"Run path {p} does not exist.")
        if RunDir(p).is_run():
            runs.append(p)
            continue
        found = (
            sorted(c for c in p.iterdir() if c.is_dir() and RunDir(c).is_run())
            if p.is_dir()
            else []
        )
        if not found:
            raise ChipviInputError(
                f"{p} is neither a run directory (config.yaml + facts/) nor a folder of them."
            )
        runs += found
    return list(dict.fromkeys(runs))


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key + "."))
        elif isinstance(v, list):
            out[key] = ",".join(map(str, v))
        else:
            out[key] = v
    return out


def _status(events: list[dict]) -> str:
    kinds = [e.get("event") for e in events]
    if "train_end" in kinds:
        return "finished"
    for kind in reversed(kinds):
        if kind in ("interrupted", "error"):
            return kind
        if kind in ("epoch_end", "run_start", "resume"):
            return "incomplete"
    return "empty"


def load_runs(path: str | os.PathLike | Iterable[str | os.PathLike]) -> dict[str, pd.DataFrame]:
    """Facts of one or more runs as DataFrames.

    Parameters
    ----------
    path
        A run directory (``outputs/runs/<timestamp>_<name>``), a folder holding run directories
        (``outputs/runs``), or a list of either.

    Returns
    -------
    dict
        ``"runs"``: one row per run (index = run folder name) with ``path``, ``status``
        (finished, interrupted, error, incomplete), ``epochs``, ``final_<term>`` of the last
        training epoch, ``wall_s``, and every config value as ``config.<dotted.key>``;
        ``"scalars"``: all rows of ``facts/scalars.csv`` with a ``run`` column;
        ``"events"``: all events with a ``run`` column (loss terms as ``losses.<term>``);
        ``"meta"``: ``facts/meta.json`` flattened, one row per run.

    Examples
    --------
    >>> facts = chipvi.io.load_runs("outputs/runs")  # doctest: +SKIP
    >>> facts["scalars"].pivot_table(index="epoch", columns="run", values="elbo")  # doctest: +SKIP
    """
    import yaml

    paths = [path] if isinstance(path, str | os.PathLike) else list(path)
    runs = _find_runs(paths)
    rows, scalars, events, metas = [], [], [], []
    for run in runs:
        name, folder = run.name, RunDir(run)
        config = yaml.safe_load(folder.config_path.read_text()) or {}
        ev = folder.read_events()
        sc_path = folder.scalars_path
        sc = (
            pd.read_csv(sc_path) if sc_path.is_file() and sc_path.stat().st_size else pd.DataFrame()
        )
        meta = folder.read_meta()
        row = {"run": name, "path": str(run), "status": _status(ev)}
        if len(sc):
            row["epochs"] = int(sc["epoch"].max()) + 1
            train = sc[sc["split"] == "train"]
            if len(train):
                last = train.iloc[-1]
                for col in train.columns:
                    if col not in ("epoch", "split"):
                        row[f"final_{col}"] = last[col]
        else:
            row["epochs"] = 0
        ends = [e for e in ev if e.get("event") == "train_end"]
        row["wall_s"] = ends[-1].get("wall_s") if ends else None
        row.update({f"config.{k}": v for k, v in _flatten(config).items()})
        rows.append(row)
        if len(sc):
            scalars.append(sc.assign(run=name))
        if ev:
            events.append(pd.json_normalize(ev).assign(run=name))
        metas.append({"run": name, **_flatten(meta)})
    runs_df = pd.DataFrame(rows).set_index("run")
    scalars_df = (
        pd.concat(scalars, ignore_index=True)
        if scalars
        else pd.DataFrame(columns=["run", "epoch", "split"])
    )
    events_df = (
        pd.concat(events, ignore_index=True)
        if events
        else pd.DataFrame(columns=["run", "event", "time"])
    )
    meta_df = pd.DataFrame(metas).set_index("run")
    return {"runs": runs_df, "scalars": scalars_df, "events": events_df, "meta": meta_df}


def _drop_torn_line(fh) -> None:
    """Cut a last line without its newline (a record half-written by a killed process) off
    a file opened ``a+b``, so the next record starts a line of its own."""
    end = fh.seek(0, os.SEEK_END)
    if not end:
        return
    fh.seek(end - 1)
    if fh.read(1) == b"\n":
        return
    fh.seek(0)
    fh.truncate(fh.read().rfind(b"\n") + 1)
