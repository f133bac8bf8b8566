"""Reading ``chipvi train`` run directories back as DataFrames (for notebooks and reports)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
import yaml

from .._errors import ChipviInputError


def _is_run(path: Path) -> bool:
    return (path / "config.yaml").is_file() and (path / "facts").is_dir()


def _find_runs(paths: Iterable[str | os.PathLike]) -> list[Path]:
    runs: list[Path] = []
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise ChipviInputError(f"Run path {p} does not exist.")
        if _is_run(p):
            runs.append(p)
            continue
        found = sorted(c for c in p.iterdir() if c.is_dir() and _is_run(c)) if p.is_dir() else []
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
    paths = [path] if isinstance(path, str | os.PathLike) else list(path)
    runs = _find_runs(paths)
    rows, scalars, events, metas = [], [], [], []
    for run in runs:
        name = run.name
        config = yaml.safe_load((run / "config.yaml").read_text()) or {}
        ev_path = run / "facts" / "events.jsonl"
        ev = (
            [json.loads(line) for line in ev_path.read_text().splitlines() if line.strip()]
            if ev_path.is_file()
            else []
        )
        sc_path = run / "facts" / "scalars.csv"
        sc = (
            pd.read_csv(sc_path) if sc_path.is_file() and sc_path.stat().st_size else pd.DataFrame()
        )
        meta_path = run / "facts" / "meta.json"
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
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
