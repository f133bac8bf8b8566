"""``chipvi train``: config → run directory (facts, checkpoints, trained model)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from .._errors import ChipviInputError
from ..io import is_store
from ._config import default_config_dir, expand_sweep, to_yaml, validate_variants
from ._data import check_data_inputs
from ._rundir import RunDir, Timer, git_commit, software_versions, timestamped_name

EXAMPLES = """\
examples:
  chipvi train --samplesheet sheet.csv           # your BAMs (CSV: sample,bam,control,...)
  chipvi train --h5ad bins.h5ad train.max_epochs=300   # bins from `chipvi bin`
  chipvi train                                   # the shipped configs: bundled demo data
  chipvi train experiment=demo model.n_hidden=64 # pick an experiment, override a value
  chipvi train data=cssq_chr19_25bp model=r_p    # swap the data and model files
  chipvi train -m model.consistency_weight=0,1,10   # sweep: one run per value
  chipvi train --resume outputs/runs/2026-01-31_12-00-00_chipvi
  chipvi train --show-config experiment=demo     # print the composed config, run nothing
"""


class TrainingInterrupted(Exception):
    """Ctrl-C during training; the last checkpoint is kept."""

    def __init__(self, run: RunDir):
        super().__init__(str(run.path))
        self.run = run


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train ChIPVI from YAML configs into a run directory",
        description=(
            "Compose a config from configs/config.yaml, the selected data/model/experiment files "
            "and KEY=VALUE overrides, then train into outputs/runs/<timestamp>_<name>/ "
            "(config.yaml, facts/events.jsonl, facts/scalars.csv, facts/meta.json, "
            "checkpoints/, model/, figures/)."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="group selection (data=NAME, model=NAME, experiment=NAME) or dotted "
        "override (model.n_hidden=64, train.max_epochs=50)",
    )
    p.add_argument(
        "-m",
        "--multirun",
        action="store_true",
        help="sweep: KEY=a,b,c gives one run per value (cartesian product over keys)",
    )
    p.add_argument(
        "--config-dir",
        type=Path,
        default=None,
        help="folder with config.yaml and data/, model/, experiment/ "
        "(default: $CHIPVI_CONFIG_DIR, ./configs, or the configs shipped with chipvi; "
        "`chipvi init DIR` writes a copy to edit)",
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument(
        "--samplesheet",
        default=None,
        metavar="CSV",
        help="train on these BAMs (sample sheet CSV) instead of the configured data file; "
        "data.* overrides still apply (e.g. data.bin_size=100)",
    )
    source.add_argument(
        "--h5ad",
        default=None,
        help="train on these bins (from `chipvi bin`: an .h5ad, or a .zarr store read in "
        "blocks) instead of the configured data file",
    )
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        help="a complete config file (e.g. another run's config.yaml) instead of --config-dir",
    )
    p.add_argument(
        "--run-dir",
        type=Path,
        default=None,
        help="exact run directory (default: <output_dir>/<YYYY-MM-DD_HH-MM-SS>_<name>)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing --run-dir")
    p.add_argument(
        "--resume",
        type=Path,
        default=None,
        metavar="RUN_DIR",
        help="continue an interrupted run from its last checkpoint (same seed, same result)",
    )
    p.add_argument(
        "--show-config", action="store_true", help="print the composed config(s) and exit"
    )
    p.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=argparse.SUPPRESS,
        help="no progress bars or summaries",
    )
    p.set_defaults(func=run)


def _sweep_name(name: str, combo: list[str]) -> str:
    """``<name>_<key>=<value>...`` for a swept run (last component of each dotted key)."""
    parts = [re.sub(r"[^A-Za-z0-9_.=-]+", "-", c.split(".")[-1]) for c in combo]
    return "_".join([name, *parts])


def _data_overrides(args) -> list[str]:
    """``--samplesheet`` / ``--h5ad``: the user's data replaces the configured data file whole
    (no bundled region, chromosomes or bin size carried over)."""
    given = {"samplesheet": args.samplesheet, "h5ad": args.h5ad}
    chosen = {k: v for k, v in given.items() if v is not None}
    if not chosen:
        return []
    ((key, value),) = chosen.items()
    path = Path(value).expanduser().resolve()
    if not (path.is_dir() if path.suffix == ".zarr" else path.is_file()):
        raise ChipviInputError(f"--{key} {value}: file does not exist.")
    selection = [] if args.config is not None else ["data=null"]
    other = "h5ad" if key == "samplesheet" else "samplesheet"
    # The value is quoted: a path may hold characters the override syntax would parse.
    return [*selection, f"data.{key}='{path}'", f"data.{other}=null", "data.region=null",
            "data.chroms=null"]  # fmt: skip


def run(args) -> int:
    if args.resume is not None:
        if (
            args.overrides
            or args.multirun
            or args.config
            or args.run_dir
            or args.h5ad
            or (args.samplesheet)
        ):
            raise ChipviInputError(
                "--resume takes only the run directory: the run continues with its own "
                "config.yaml (no overrides, --config, --run-dir or -m)."
            )
        return resume(args.resume, quiet=args.quiet)

    config_dir = args.config_dir or (None if args.config else default_config_dir())
    if args.config is not None and not args.config.is_file():
        raise ChipviInputError(f"--config {args.config} does not exist.")
    configs = expand_sweep(config_dir, _data_overrides(args) + args.overrides, args.multirun,
                           args.config)  # fmt: skip
    if args.show_config:
        for cfg, combo in configs:
            if len(configs) > 1:
                print(f"# {' '.join(combo)}")
            print(to_yaml(cfg), end="")
        return 0
    if args.run_dir is not None and len(configs) > 1:
        raise ChipviInputError("--run-dir names one run; a sweep makes several (drop --run-dir).")

    # Validate everything a run needs before any run directory exists.
    from ._callbacks import check_loggers_available
    from ._model import import_model_class, model_kwargs

    for cfg, _ in configs:
        validate_variants(cfg)
        check_data_inputs(cfg.data)
        check_loggers_available(list(cfg.train.loggers))
        model_kwargs(cfg.model, import_model_class(cfg.model.model_class))
    planned = []
    used: set[Path] = set()
    for cfg, combo in configs:
        if args.run_dir is not None:
            path = args.run_dir
        else:
            base = Path(cfg.output_dir) / timestamped_name(_sweep_name(cfg.name, combo))
            path, i = base, 1
            while path in used or path.exists():
                i += 1
                path = base.with_name(f"{base.name}_{i}")
        if path.exists() and not args.overwrite:
            raise ChipviInputError(
                f"Run directory {path} already exists; pass --overwrite to replace it or "
                f"--resume {path} to continue it."
            )
        used.add(path)
        planned.append((cfg, path))

    for cfg, path in planned:
        run_dir = RunDir.create(
            path, to_yaml(cfg), overwrite=args.overwrite, unique=args.run_dir is None
        )
        if not args.quiet:
            print(f"chipvi train: run directory {run_dir.path}")
        train_run(cfg, run_dir, quiet=args.quiet, resume=False)
    return 0


def resume(path: Path, *, quiet: bool) -> int:
    """Continue the run in ``path`` from its last checkpoint with its own config."""
    from ._config import compose

    run_dir = RunDir(path).require_existing()
    if not run_dir.checkpoint_path.is_file():
        raise ChipviInputError(
            f"--resume {path}: no checkpoint at {run_dir.checkpoint_path} (the run stopped before "
            "its first epoch ended). Start it again with `chipvi train --config "
            f"{run_dir.config_path} --run-dir {path} --overwrite`."
        )
    events = run_dir.read_events()
    if any(e.get("event") == "train_end" for e in events):
        raise ChipviInputError(
            f"--resume {path}: this run already finished training (see facts/events.jsonl)."
        )
    cfg = compose(None, [], run_dir.config_path)
    validate_variants(cfg)
    if not run_dir.data_path.is_file():  # no cached bins: the configured inputs must exist
        check_data_inputs(cfg.data)
    train_run(cfg, run_dir, quiet=quiet, resume=True)
    return 0


def _sinks(cfg, run_dir: RunDir) -> list:
    from omegaconf import OmegaConf

    from ._callbacks import TensorBoardSink, WandbSink

    sinks = []
    for name in cfg.train.loggers:
        if name == "tensorboard":
            sinks.append(TensorBoardSink(run_dir.path / "tensorboard"))
        elif name == "wandb":
            sinks.append(
                WandbSink(
                    run_dir.path / "wandb",
                    run_dir.path.name,
                    OmegaConf.to_container(cfg, resolve=True),
                )
            )
    return sinks


def _load_run_data(cfg, run_dir: RunDir, quiet: bool):
    """The run's bins: its cached ``data.h5ad`` if present, else the configured source."""
    import anndata as ad

    from ._data import fingerprint, load_data

    if run_dir.data_path.is_file():
        return ad.read_h5ad(run_dir.data_path), [fingerprint(run_dir.data_path)]
    adata, prints, binned = load_data(cfg.data, progress=not quiet)
    if binned:
        # Cache the counted bins so denoise/call/resume never re-read the BAMs.
        from .._utils import atomic_path

        with atomic_path(run_dir.data_path) as tmp:
            adata.write_h5ad(tmp)
    return adata, prints


def train_run(cfg, run_dir: RunDir, *, quiet: bool, resume: bool, announce: bool = True):
    """Train one configured model into ``run_dir``; returns the trained model."""
    import scvi

    from .._settings import settings
    from ._callbacks import RunCallback
    from ._model import import_model_class, model_kwargs, train_kwargs

    timer = Timer()
    cls = import_model_class(cfg.model.model_class)
    kwargs = model_kwargs(cfg.model, cls)
    last_epoch = None
    if resume:
        import torch

        ckpt = torch.load(run_dir.checkpoint_path, map_location="cpu", weights_only=False)
        last_epoch = int(ckpt["chipvi_last_epoch"])
        del ckpt
        run_dir.truncate_scalars(last_epoch)
        run_dir.event("resume", from_epoch=last_epoch + 1, checkpoint=str(run_dir.checkpoint_path))
    else:
        run_dir.event("run_start", name=cfg.name, seed=cfg.seed, model_class=cfg.model.model_class)
    threads_before = settings._num_threads
    try:
        adata, prints = _load_run_data(cfg, run_dir, quiet)
        meta = run_dir.read_meta() if resume else {}
        meta.update(
            {
                "name": cfg.name,
                "seed": cfg.seed,
                "git_commit": git_commit(),
                "software": software_versions(),
                "data": {
                    "inputs": prints,
                    "n_bins": int(adata.n_obs),
                    "n_libraries": int(adata.n_vars),
                },
                "model_class": cfg.model.model_class,
            }
        )
        if resume:
            meta.setdefault("resumed", []).append({"from_epoch": last_epoch + 1})
        run_dir.write_meta(meta)

        if cfg.train.threads is not None:
            settings.num_threads = int(cfg.train.threads)  # torch, numba (and binning)
        with settings.lightning_context():  # Lightning logs "Seed set to ..." at INFO
            scvi.settings.seed = int(cfg.seed)  # seeds torch, numpy, random (and Pyro's RNG)
        if not is_store(adata):  # a bins store (.zarr) needs no set-up
            cls.setup_anndata(adata)
        model = cls(adata, **kwargs)
        callback = RunCallback(
            run_dir,
            cfg.seed,
            _sinks(cfg, run_dir),
            checkpoint_interval_s=cfg.train.checkpoint_interval_s,
        )
        targs = train_kwargs(cfg.train, cls)
        if resume:
            targs["ckpt_path"] = str(run_dir.checkpoint_path)
        with settings.lightning_context():  # Lightning's chatter at chipvi's verbosity
            model.train(
                callbacks=[callback],
                enable_progress_bar=settings.progress_bar and not quiet,
                **targs,
            )
    except (KeyboardInterrupt, SystemExit) as e:
        # Lightning turns Ctrl-C into SystemExit(1) after its own cleanup.
        if isinstance(e, SystemExit) and e.code in (0, None):
            raise
        if not any(ev.get("event") == "interrupted" for ev in run_dir.read_events()[-1:]):
            run_dir.event("interrupted", error=type(e).__name__)
        raise TrainingInterrupted(run_dir) from None
    except Exception as e:
        run_dir.event("error", error=f"{type(e).__name__}: {e}")
        raise
    finally:
        if cfg.train.threads is not None:  # the run's setting, not the process's
            settings.num_threads = threads_before
    model.save(str(run_dir.model_dir), overwrite=True)
    rows, _ = run_dir.read_scalars_raw()
    final = {
        k: float(v)
        for k, v in (rows[-1] if rows else {}).items()
        if k not in ("epoch", "split") and v not in ("", None)
    }
    epochs = max((int(r["epoch"]) for r in rows), default=-1) + 1
    run_dir.event("train_end", epochs=epochs, final=final, wall_s=timer.elapsed())
    if announce and not quiet:
        print(f"chipvi train: {epochs} epochs, model saved to {run_dir.model_dir}")
    return model
