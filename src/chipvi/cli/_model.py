"""Building and loading the configured model class (imports torch: only used by commands that train)."""

from __future__ import annotations

import importlib
import inspect

from .._errors import ChipviInputError

# ModelConfig fields that are not constructor arguments.
_NOT_KWARGS = {"model_class"}


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
    """Constructor arguments from the config; ``None`` means the class's own default."""
    from omegaconf import OmegaConf

    values = OmegaConf.to_container(model_cfg, resolve=True)
    kwargs = {k: v for k, v in values.items() if k not in _NOT_KWARGS and v is not None}
    params = inspect.signature(cls.__init__).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        unknown = [k for k in kwargs if k not in params]
        if unknown:
            raise ChipviInputError(
                f"config key(s) {', '.join('model.' + k for k in unknown)} are not arguments of "
                f"{cls.__module__}.{cls.__name__}; set them to null or remove them."
            )
    if "consistency" in kwargs:
        kwargs["consistency"] = tuple(kwargs["consistency"])
    return kwargs


def train_kwargs(train_cfg) -> dict:
    """``model.train`` arguments from the config (``None`` leaves the model's default)."""
    out = {}
    for key in (
        "max_epochs",
        "batch_size",
        "lr",
        "train_size",
        "early_stopping",
        "accelerator",
        "devices",
        "strategy",
    ):
        value = getattr(train_cfg, key)
        if value is not None:
            out[key] = value
    if isinstance(out.get("devices"), str) and out["devices"].isdigit():
        out["devices"] = int(out["devices"])
    return out
