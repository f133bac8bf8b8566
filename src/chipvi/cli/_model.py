"""Building and loading the configured model class (imports torch: only used by commands that train)."""

from __future__ import annotations

import importlib

from .._errors import ChipviInputError

# ModelConfig / TrainConfig fields that are not arguments of the constructor / of train.
_NOT_KWARGS = {"model_class"}
_NOT_TRAIN_KWARGS = {"threads", "loggers", "checkpoint_interval_s"}


def import_model_class(path: str):
    """``"chipvi.model:ChIPVI"`` → the class."""
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ChipviInputError(
            f"config key 'model.model_class': cannot import {module_name!r} ({e})."
        ) from None
    cls = getattr(module, attr, None)
    if cls is None:
        raise ChipviInputError(
            f"config key 'model.model_class': {module_name!r} has no {attr!r}. "
            "Is the model available in this chipvi build?"
        )
    return cls


def model_kwargs(model_cfg, cls) -> dict:
    """Constructor arguments from the config; ``null`` means the class's own default."""
    from omegaconf import OmegaConf

    from ._schema import call_kwargs

    values = OmegaConf.to_container(model_cfg, resolve=True)
    values = {k: v for k, v in values.items() if k not in _NOT_KWARGS}
    try:
        return call_kwargs(values, cls.__init__, cls)
    except ChipviInputError as e:
        raise ChipviInputError(f"model: {e} ({cls.__module__}.{cls.__name__})") from None


def train_kwargs(train_cfg, cls) -> dict:
    """``model.train`` arguments from the config (``null`` leaves the model's default)."""
    from omegaconf import OmegaConf

    from ._schema import call_kwargs

    values = OmegaConf.to_container(train_cfg, resolve=True)
    values = {k: v for k, v in values.items() if k not in _NOT_TRAIN_KWARGS}
    out = call_kwargs(values, cls.train)
    if isinstance(out.get("devices"), str) and out["devices"].isdigit():
        out["devices"] = int(out["devices"])
    return out
