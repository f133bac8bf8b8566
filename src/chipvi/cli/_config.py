"""Typed run configuration: dataclasses, YAML composition, command-line overrides, sweeps.

A run is described by one ``ExperimentConfig`` with three parts, each a dataclass that
OmegaConf validates (unknown keys and wrong types are errors naming the key and the file).
The parts are derived from the functions they feed (:mod:`chipvi.cli._schema`): ``data`` holds
the arguments of :func:`chipvi.read_bams`, ``model`` those of the model class's constructor and
``train`` those of its ``train`` method, so a new argument is a config key at once::

    configs/config.yaml            root: defaults + seed, name, train settings
    configs/data/<name>.yaml       data keys   (selected with data=<name>; data=null: none)
    configs/model/<name>.yaml      model keys  (selected with model=<name>)
    configs/experiment/<name>.yaml any keys, may reselect data/model
                                   in its own ``defaults`` (selected with experiment=<name>)

The starter configs ship in the package (``chipvi/configs``); ``chipvi init DIR`` copies them.

Composition order (later wins): dataclass defaults, root file, data file, model file,
experiment file, command-line dot-list overrides (``model.n_hidden=64``). A sweep
(``-m model.consistency_weight=0,1,10`` or an experiment's ``sweep:`` mapping) expands into
the cartesian product of one config per value combination.
"""

from __future__ import annotations

import functools
import itertools
import os
from dataclasses import field, make_dataclass
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .._errors import ChipviInputError
from ._schema import dataclass_from

GROUPS = ("data", "model", "experiment")
BUNDLED_PREFIX = "bundled:"


DEFAULT_MODEL_CLASS = "chipvi.model:ChIPVI"


def _data_config() -> type:
    from ..io import read_bams

    return dataclass_from(
        "DataConfig",
        read_bams,
        # out=, chunk_size=, overwrite= write a bins store: `chipvi bin -o x.zarr`'s job.
        skip={"samplesheet", "progress", "out", "chunk_size", "overwrite"},
        extra=[
            ("samplesheet", str | None, None),
            ("h5ad", str | None, None),
            ("region", str | None, None),
        ],
        doc="Where the bins come from: the arguments of chipvi.read_bams, plus exactly one of "
        "``samplesheet`` (BAMs binned with read_bams; ``bundled:cssq_chr19`` names the bundled "
        "data) or ``h5ad`` (an AnnData written by ``chipvi bin``: ``.h5ad``, or a ``.zarr`` store "
        "that training and the posterior read in blocks), and an optional ``region`` "
        "crop (``chrom:start-end``) applied after binning.",
    )


def _model_config(model_class: str) -> type:
    cls = _import_class(model_class)
    return dataclass_from(
        "ModelConfig",
        cls.__init__,
        owner=cls,
        skip={"adata"},
        extra=[("model_class", str, model_class)],
        doc="The arguments of the model class's constructor, plus ``model_class`` "
        "(``package.module:Class``, any class with the ChIPVI contract).",
    )


def _train_config(model_class: str) -> type:
    cls = _import_class(model_class)
    return dataclass_from(
        "TrainConfig",
        cls.train,  # its **kwargs go to Lightning's Trainer: no base-class arguments added
        skip={"callbacks"},
        extra=[
            # CPU threads for torch, numba and binning (chipvi.settings.num_threads); null: the
            # settings' default.
            ("threads", int | None, None),
            # Extra loggers next to the CSV files that are always written: tensorboard, wandb.
            ("loggers", list[str], []),
            # Seconds of training between checkpoints (0: after every epoch); a resumed run
            # repeats at most this much work. Checkpoints are written at epoch ends only.
            ("checkpoint_interval_s", float, 30.0),
        ],
        doc="The arguments of ``model.train`` plus threads, loggers and checkpoints.",
    )


def _import_class(path: str):
    from ._model import import_model_class

    return import_model_class(path)


@functools.cache
def experiment_config(model_class: str = DEFAULT_MODEL_CLASS) -> type:
    """The dataclass of one training run, its parts derived from the functions' signatures.

    ``data`` holds :func:`chipvi.read_bams`' arguments, ``model`` those of ``model_class``'s
    constructor and ``train`` those of its ``train`` method.
    """
    data, model, train = _data_config(), _model_config(model_class), _train_config(model_class)

    cls = make_dataclass(
        "ExperimentConfig",
        [
            ("name", str, field(default="chipvi")),
            ("seed", int, field(default=0)),
            ("output_dir", str, field(default="outputs/runs")),
            ("data", data, field(default_factory=data)),
            ("model", model, field(default_factory=model)),
            ("train", train, field(default_factory=train)),
            # {"dotted.key": [values]}: one run per combination (same as `-m key=a,b`).
            ("sweep", dict[str, Any], field(default_factory=dict)),
        ],
    )
    cls.__doc__ = "One training run."
    return cls


def __getattr__(name: str):
    # The schema imports the model class (torch): built on first use, not at import.
    if name == "ExperimentConfig":
        return experiment_config()
    parts = {"DataConfig": "data", "ModelConfig": "model", "TrainConfig": "train"}
    if name in parts:
        return experiment_config().__dataclass_fields__[parts[name]].default_factory
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


KNOWN_LOGGERS = ("csv", "tensorboard", "wandb")


def shipped_config_dir() -> Path:
    """The starter configs shipped inside the package (``chipvi/configs``)."""
    return Path(__file__).resolve().parents[1] / "configs"


def default_config_dir() -> Path:
    """The configs folder used when ``--config-dir`` is not given.

    ``$CHIPVI_CONFIG_DIR``, else ``./configs`` when it has a ``config.yaml`` (as written by
    ``chipvi init .``), else the configs shipped with chipvi.
    """
    env = os.environ.get("CHIPVI_CONFIG_DIR")
    if env:
        return Path(env)
    if (Path("configs") / "config.yaml").is_file():
        return Path("configs")
    return shipped_config_dir()


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
    sources: list[tuple[Any, str]] = []  # (update, where it came from), later wins
    if config_file is not None:
        if groups:
            raise ChipviInputError(
                f"Group selections ({', '.join(groups)}) cannot be combined with --config; "
                "use dotted overrides such as model.n_hidden=64."
            )
        sources.append((_read_yaml(config_file), str(config_file)))
    else:
        if config_dir is None:
            raise ChipviInputError(
                "No configs folder found: pass --config-dir, set CHIPVI_CONFIG_DIR, or run "
                "`chipvi init DIR` to write starter configs."
            )
        root_path = config_dir / "config.yaml"
        if not root_path.is_file():
            raise ChipviInputError(
                f"{root_path} does not exist; --config-dir must hold config.yaml "
                "(`chipvi init DIR` writes one)."
            )
        root = _read_yaml(root_path)
        selected = _pop_defaults(root, root_path)
        experiment_name = groups.get("experiment", selected.get("experiment"))
        experiment: dict = {}
        if _is_selected(experiment_name):
            exp_path = _group_file(config_dir, "experiment", experiment_name)
            experiment = _read_yaml(exp_path)
            selected.update(_pop_defaults(experiment, exp_path))
        selected.update(groups)
        sources.append((root, str(root_path)))
        for group in ("data", "model"):
            name = selected.get(group)
            if _is_selected(name):
                path = _group_file(config_dir, group, name)
                sources.append(({group: _read_yaml(path)}, str(path)))
        if experiment:
            sources.append((experiment, str(exp_path)))
    if dots:
        try:
            update = OmegaConf.from_dotlist(dots)
        except OmegaConfBaseException as e:
            raise ChipviInputError(f"command line: cannot parse overrides {dots}: {e}") from None
        sources.append((update, "command line"))
    # The model and train keys are the arguments of the configured model class.
    model_class = DEFAULT_MODEL_CLASS
    for update, _ in sources:
        value = OmegaConf.select(OmegaConf.create(update), "model.model_class")
        if isinstance(value, str):
            model_class = value
    if ":" not in model_class:
        raise ChipviInputError(
            f"config key 'model.model_class' must be 'package.module:Class', got {model_class!r}."
        )
    cfg = OmegaConf.structured(experiment_config(model_class))
    for update, source in sources:
        cfg = _merge(cfg, update, source)
    validate(cfg)
    return cfg


def _is_selected(name: str | None) -> bool:
    """A group selection names a file; ``null``/``none`` (e.g. ``data=null``) selects none."""
    return bool(name) and str(name).lower() not in ("null", "none")


def validate(cfg: DictConfig, source: str = "config") -> None:
    """Checks beyond types, before anything runs.

    The ``data`` values go through the validator :func:`chipvi.read_bams` itself uses; model
    arguments are checked by the model class when it is built. Only the keys the command line
    adds (name, train split, threads, loggers, checkpoints) are checked here.
    """

    def bad(key: str, msg: str) -> ChipviInputError:
        return ChipviInputError(f"{source}: config key '{key}' {msg}")

    if not cfg.name or "/" in cfg.name:
        raise bad("name", f"must be a non-empty name without '/', got {cfg.name!r}.")
    _check_read_params(cfg.data, source)
    t = cfg.train
    if t.get("train_size") is not None and not 0.0 < t.train_size <= 1.0:
        raise bad("train.train_size", f"must be in (0, 1], got {t.train_size}.")
    for key, kind in (("max_epochs", int), ("batch_size", int), ("threads", int), ("lr", float)):
        value = t.get(key)
        if value is None:
            continue
        # a model class without type hints leaves these untyped in the schema
        if isinstance(value, bool) or not isinstance(value, int if kind is int else int | float):
            raise bad(f"train.{key}", f"has the wrong type: {value!r} is not {kind.__name__}.")
        if value <= 0:
            raise bad(f"train.{key}", f"must be positive, got {value}.")
    if t.checkpoint_interval_s < 0:
        raise bad("train.checkpoint_interval_s", f"must be >= 0, got {t.checkpoint_interval_s}.")
    for name in t.loggers:
        if name not in KNOWN_LOGGERS:
            raise bad(
                "train.loggers",
                f"has unknown logger {name!r}; choose from {', '.join(KNOWN_LOGGERS)}.",
            )
    if ":" not in cfg.model.model_class:
        raise bad(
            "model.model_class",
            f"must be 'package.module:Class', got {cfg.model.model_class!r}.",
        )
    for key, values in cfg.sweep.items():
        if not isinstance(values, list | tuple) and not OmegaConf.is_list(values):
            raise bad(f"sweep.{key}", "must be a list of values to try.")


def _check_read_params(data: DictConfig, source: str) -> None:
    """``data`` through read_bams' own parameter check (the same messages, naming the key)."""
    from ..io import check_read_params

    values = OmegaConf.to_container(data, resolve=True)
    names = ("bin_size", "fragment_length", "min_mapq", "keep_duplicates", "max_per_position")
    try:
        check_read_params(*(values[n] for n in names))
    except ChipviInputError as e:
        key = str(e).split(" ", 1)[0]
        raise ChipviInputError(f"{source}: config key 'data.{key}': {e}") from None


def validate_variants(cfg: DictConfig) -> None:
    """Check variant names against the model's registry (``chipvi.module.list_*``) when present."""
    try:
        from .. import module
    except ImportError:  # pragma: no cover - the package always has chipvi.module
        return
    m = cfg.model
    checks = [
        ("model.technical", m.get("technical"), "list_technical"),
        ("model.covariates", m.get("covariates"), "list_covariate_sets"),
    ]
    checks += [
        ("model.consistency", name, "list_consistency") for name in m.get("consistency") or []
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
