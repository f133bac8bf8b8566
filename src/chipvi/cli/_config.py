"""Typed run configuration: dataclasses, YAML composition, command-line overrides, sweeps.

A run is described by one :class:`ExperimentConfig` with three parts, each a dataclass that
OmegaConf validates (unknown keys and wrong types are errors naming the key and the file)::

    configs/config.yaml            root: defaults + seed, name, train settings
    configs/data/<name>.yaml       DataConfig fields   (selected with data=<name>)
    configs/model/<name>.yaml      ModelConfig fields  (selected with model=<name>)
    configs/experiment/<name>.yaml any ExperimentConfig fields, may reselect data/model
                                   in its own ``defaults`` (selected with experiment=<name>)

Composition order (later wins): dataclass defaults, root file, data file, model file,
experiment file, command-line dot-list overrides (``model.n_hidden=64``). A sweep
(``-m model.consistency_weight=0,1,10`` or an experiment's ``sweep:`` mapping) expands into
the cartesian product of one config per value combination.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .._errors import ChipviInputError

GROUPS = ("data", "model", "experiment")
BUNDLED_PREFIX = "bundled:"


@dataclass
class DataConfig:
    """Where the bins come from.

    Exactly one of ``samplesheet`` (binned with :func:`chipvi.read_bams`) or ``h5ad`` (an AnnData
    written by ``chipvi bin``) is set. ``samplesheet: bundled:cssq_chr19`` names the bundled
    real data. Relative paths resolve against the working directory.
    """

    samplesheet: str | None = None
    h5ad: str | None = None
    bin_size: int = 200
    fragment_length: int = 200
    min_mapq: int = 0
    keep_duplicates: bool = True
    #: At most this many reads per position, strand and TLEN; ``auto``: from each BAM's read
    #: density (MACS3 ``--keep-dup auto``); ``null``: no limit.
    max_per_position: int | str | None = None
    blacklist: str | None = None
    chroms: list[str] | None = None
    #: Optional crop after binning, ``chrom:start-end`` (bins overlapping it are kept).
    region: str | None = None


@dataclass
class ModelConfig:
    """Model variant and size; ``None`` leaves the model class's own default."""

    technical: str | None = None
    consistency: list[str] | None = None
    consistency_weight: float | None = None
    covariates: str | None = None
    n_hidden: int | None = None
    n_layers: int | None = None
    #: Import path ``package.module:Class`` of the model; any class with the ChIPVI contract.
    model_class: str = "chipvi.model:ChIPVI"


@dataclass
class TrainConfig:
    """Arguments of ``model.train`` plus logging."""

    max_epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    train_size: float = 1.0
    early_stopping: bool = False
    accelerator: str = "auto"
    devices: str = "auto"
    strategy: str = "auto"
    #: CPU threads for torch (``torch.set_num_threads``); null keeps torch's default.
    threads: int | None = None
    #: Extra loggers next to the CSV files that are always written: tensorboard, wandb.
    loggers: list[str] = field(default_factory=list)
    #: Seconds of training between checkpoints (0: after every epoch); a resumed run repeats at
    #: most this much work. Checkpoints are written at epoch ends only.
    checkpoint_interval_s: float = 30.0


@dataclass
class ExperimentConfig:
    """One training run."""

    name: str = "chipvi"
    seed: int = 0
    output_dir: str = "outputs/runs"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    #: ``{"dotted.key": [values]}``: one run per combination (same as ``-m key=a,b``).
    sweep: dict[str, Any] = field(default_factory=dict)


KNOWN_LOGGERS = ("csv", "tensorboard", "wandb")


def default_config_dir() -> Path | None:
    """The configs folder used when ``--config-dir`` is not given.

    ``$CHIPVI_CONFIG_DIR``, else ``./configs`` when it has a ``config.yaml``, else the
    ``configs/`` folder of the source checkout chipvi was installed from (editable installs).
    """
    env = os.environ.get("CHIPVI_CONFIG_DIR")
    if env:
        return Path(env)
    if (Path("configs") / "config.yaml").is_file():
        return Path("configs")
    repo = Path(__file__).resolve().parents[3] / "configs"
    return repo if (repo / "config.yaml").is_file() else None


def _read_yaml(path: Path) -> dict:
    try:
        text = path.read_text()
    except OSError as e:
        raise ChipviInputError(f"Cannot read config file {path}: {e.strerror}.") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ChipviInputError(f"{path} is not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ChipviInputError(
            f"{path} must hold a mapping of keys to values, not {type(data).__name__}."
        )
    return data


def _merge(base: DictConfig, update: Any, source: str) -> DictConfig:
    """Merge ``update`` into the typed ``base``; errors name the key and the ``source``."""
    try:
        return OmegaConf.merge(base, update)
    except OmegaConfBaseException as e:
        raise ChipviInputError(_describe(e, source)) from None


def _describe(e: OmegaConfBaseException, source: str) -> str:
    key = getattr(e, "full_key", None) or "?"
    msg = str(getattr(e, "msg", e)).splitlines()[0]
    if type(e).__name__ == "ConfigKeyError":
        return f"{source}: unknown config key '{key}' ({msg}). Check the spelling; `chipvi train --show-config` lists every key."
    return f"{source}: config key '{key}' has the wrong type or value: {msg}."


def _split_overrides(overrides: list[str]) -> tuple[dict[str, str], list[str]]:
    """Separate group selections (``data=x``) from dot-list overrides (``data.bin_size=25``)."""
    groups: dict[str, str] = {}
    dots: list[str] = []
    for item in overrides:
        if "=" not in item:
            raise ChipviInputError(
                f"Override '{item}' is not of the form key=value (e.g. model.n_hidden=64)."
            )
        key, value = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ChipviInputError(f"Override '{item}' has an empty key.")
        if key in GROUPS:
            groups[key] = value.strip()
        else:
            dots.append(f"{key}={value}")
    return groups, dots


def _group_file(config_dir: Path, group: str, name: str) -> Path:
    path = config_dir / group / f"{name}.yaml"
    if not path.is_file():
        folder = config_dir / group
        choices = sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []
        raise ChipviInputError(
            f"No {group} config '{name}' ({path} does not exist); available: "
            f"{', '.join(choices) or 'none'}."
        )
    return path


def _pop_defaults(data: dict, path: Path) -> dict[str, str]:
    defaults = data.pop("defaults", None) or {}
    if isinstance(defaults, list):  # Hydra style: [{data: x}, {model: y}]
        merged: dict = {}
        for item in defaults:
            if not isinstance(item, dict):
                raise ChipviInputError(f"{path}: 'defaults' entries must be group: name pairs.")
            merged.update(item)
        defaults = merged
    if not isinstance(defaults, dict):
        raise ChipviInputError(f"{path}: 'defaults' must map a group (data, model) to a file name.")
    for key, value in defaults.items():
        if key not in GROUPS:
            raise ChipviInputError(
                f"{path}: unknown config group 'defaults.{key}'; groups are {', '.join(GROUPS)}."
            )
        if value is not None and not isinstance(value, str):
            raise ChipviInputError(f"{path}: 'defaults.{key}' must be a file name, not {value!r}.")
    return defaults


def compose(
    config_dir: Path | None, overrides: list[str] = (), config_file: Path | None = None
) -> DictConfig:
    """Build one validated config from the config folder (or a saved file) and overrides.

    Parameters
    ----------
    config_dir
        Folder with ``config.yaml`` and the ``data/``, ``model/``, ``experiment/`` groups.
    overrides
        ``group=name`` selections and ``dotted.key=value`` overrides, in command-line order.
    config_file
        A complete config (e.g. a run's resolved ``config.yaml``) used instead of the folder.

    Raises
    ------
    ChipviInputError
        Missing files, unknown keys, wrong types; the message names the key and the file.
    """
    groups, dots = _split_overrides(list(overrides))
    cfg = OmegaConf.structured(ExperimentConfig)
    if config_file is not None:
        if groups:
            raise ChipviInputError(
                f"Group selections ({', '.join(groups)}) cannot be combined with --config; "
                "use dotted overrides such as model.n_hidden=64."
            )
        cfg = _merge(cfg, _read_yaml(config_file), str(config_file))
    else:
        if config_dir is None:
            raise ChipviInputError(
                "No configs folder found: pass --config-dir, set CHIPVI_CONFIG_DIR, or run from a "
                "folder with configs/config.yaml."
            )
        root_path = config_dir / "config.yaml"
        if not root_path.is_file():
            raise ChipviInputError(
                f"{root_path} does not exist; --config-dir must hold config.yaml."
            )
        root = _read_yaml(root_path)
        selected = _pop_defaults(root, root_path)
        experiment_name = groups.get("experiment", selected.get("experiment"))
        experiment: dict = {}
        if experiment_name:
            exp_path = _group_file(config_dir, "experiment", experiment_name)
            experiment = _read_yaml(exp_path)
            selected.update(_pop_defaults(experiment, exp_path))
        selected.update(groups)
        cfg = _merge(cfg, root, str(root_path))
        for group in ("data", "model"):
            name = selected.get(group)
            if name:
                path = _group_file(config_dir, group, name)
                cfg = _merge(cfg, {group: _read_yaml(path)}, str(path))
        if experiment:
            cfg = _merge(cfg, experiment, str(exp_path))
    if dots:
        try:
            update = OmegaConf.from_dotlist(dots)
        except OmegaConfBaseException as e:
            raise ChipviInputError(f"command line: cannot parse overrides {dots}: {e}") from None
        cfg = _merge(cfg, update, "command line")
    validate(cfg)
    return cfg


def validate(cfg: DictConfig, source: str = "config") -> None:
    """Checks beyond types: value ranges and names the code knows."""

    def bad(key: str, msg: str) -> ChipviInputError:
        return ChipviInputError(f"{source}: config key '{key}' {msg}")

    d, t = cfg.data, cfg.train
    if not cfg.name or "/" in cfg.name:
        raise bad("name", f"must be a non-empty name without '/', got {cfg.name!r}.")
    if d.bin_size <= 0:
        raise bad("data.bin_size", f"must be a positive integer, got {d.bin_size}.")
    if d.fragment_length < 0:
        raise bad("data.fragment_length", f"must be >= 0, got {d.fragment_length}.")
    if not 0.0 < t.train_size <= 1.0:
        raise bad("train.train_size", f"must be in (0, 1], got {t.train_size}.")
    if t.max_epochs is not None and t.max_epochs <= 0:
        raise bad("train.max_epochs", f"must be a positive integer, got {t.max_epochs}.")
    if t.batch_size is not None and t.batch_size <= 0:
        raise bad("train.batch_size", f"must be a positive integer, got {t.batch_size}.")
    if t.threads is not None and t.threads <= 0:
        raise bad("train.threads", f"must be a positive integer, got {t.threads}.")
    if t.checkpoint_interval_s < 0:
        raise bad("train.checkpoint_interval_s", f"must be >= 0, got {t.checkpoint_interval_s}.")
    if t.lr is not None and t.lr <= 0:
        raise bad("train.lr", f"must be positive, got {t.lr}.")
    for name in t.loggers:
        if name not in KNOWN_LOGGERS:
            raise bad(
                "train.loggers",
                f"has unknown logger {name!r}; choose from {', '.join(KNOWN_LOGGERS)}.",
            )
    m = cfg.model
    if m.consistency_weight is not None and m.consistency_weight < 0:
        raise bad("model.consistency_weight", f"must be >= 0, got {m.consistency_weight}.")
    if m.n_hidden is not None and m.n_hidden <= 0:
        raise bad("model.n_hidden", f"must be a positive integer, got {m.n_hidden}.")
    if ":" not in m.model_class:
        raise bad("model.model_class", f"must be 'package.module:Class', got {m.model_class!r}.")
    for key, values in cfg.sweep.items():
        if not isinstance(values, list | tuple) and not OmegaConf.is_list(values):
            raise bad(f"sweep.{key}", "must be a list of values to try.")


def validate_variants(cfg: DictConfig) -> None:
    """Check variant names against the model's registry (``chipvi.module.list_*``) when present."""
    try:
        from .. import module
    except ImportError:  # pragma: no cover - the package always has chipvi.module
        return
    checks = [
        ("model.technical", cfg.model.technical, "list_technical"),
        ("model.covariates", cfg.model.covariates, "list_covariate_sets"),
    ]
    checks += [
        ("model.consistency", name, "list_consistency") for name in cfg.model.consistency or []
    ]
    for key, value, lister in checks:
        list_fn = getattr(module, lister, None)
        if value is None or list_fn is None:
            continue
        known = list(list_fn())
        if value not in known:
            raise ChipviInputError(
                f"config key '{key}' is {value!r}, which is not a registered variant; "
                f"known: {', '.join(map(str, known))}."
            )


def parse_sweep_overrides(items: list[str]) -> dict[str, list[str]]:
    """``["model.w=0,1,10"]`` → ``{"model.w": ["0", "1", "10"]}`` for ``-m``."""
    sweep: dict[str, list[str]] = {}
    for item in items:
        if "=" not in item:
            raise ChipviInputError(f"Override '{item}' is not of the form key=value.")
        key, value = item.split("=", 1)
        if value.startswith("[") or "," not in value:
            sweep[key] = [value]
        else:
            sweep[key] = [v for v in value.split(",")]
    return sweep


def expand_sweep(
    config_dir: Path | None, overrides: list[str], multirun: bool, config_file: Path | None = None
) -> list[tuple[DictConfig, list[str]]]:
    """All configs of a (possibly swept) run, each with the swept ``key=value`` items that made it.

    Without ``multirun`` a comma in a value is an ordinary character; with it, each
    ``key=a,b,c`` contributes one axis. An experiment's ``sweep:`` mapping adds axes too.
    The second element lists only keys that take several values (it names the runs).
    """
    if multirun:
        sweep = parse_sweep_overrides(overrides)
        axes = [[f"{k}={v}" for v in values] for k, values in sweep.items()]
    else:
        axes = [[item] for item in overrides]
    combos = [list(c) for c in itertools.product(*axes)] if axes else [[]]
    first = compose(config_dir, combos[0], config_file)
    if first.sweep:
        extra_axes = []
        for key, values in first.sweep.items():
            extra_axes.append([f"{key}={_dot_value(v)}" for v in values])
        axes = axes + extra_axes
        combos = [c + list(e) for c in combos for e in itertools.product(*extra_axes)]
    varying = {a[0].split("=", 1)[0] for a in axes if len(a) > 1}
    out = []
    for combo in combos:
        cfg = compose(config_dir, combo, config_file)
        # Each run stores the values it used, not the sweep that made it (a run's config.yaml
        # must re-run that one run).
        cfg.sweep = {}
        out.append((cfg, [c for c in combo if c.split("=", 1)[0] in varying]))
    return out


def _dot_value(value: Any) -> str:
    if isinstance(value, list | tuple) or OmegaConf.is_list(value):
        return "[" + ",".join(_dot_value(v) for v in value) + "]"
    if value is None:
        return "null"
    return str(value)


def to_yaml(cfg: DictConfig) -> str:
    """The resolved config as YAML (what a run directory stores)."""
    return OmegaConf.to_yaml(cfg, resolve=True)
