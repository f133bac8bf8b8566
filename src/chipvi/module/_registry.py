"""Registries of the model's interchangeable parts.

A new variant is one registered class or function: add it to the dictionary here and it is
available by name in :class:`chipvi.ChIPVI` and the CLI.
"""

from __future__ import annotations

from collections.abc import Callable

from ._consistency import mse_consistency
from ._covariates import COVARIATE_SETS
from ._technical import TechnicalControlSlope, TechnicalMuR, TechnicalNet, TechnicalRP

TECHNICAL: dict[str, type[TechnicalNet]] = {
    "control_slope": TechnicalControlSlope,
    "mu_r": TechnicalMuR,
    "r_p": TechnicalRP,
}
CONSISTENCY: dict[str, Callable] = {"mse": mse_consistency}


def list_technical() -> list[str]:
    """Names of the registered technical networks."""
    return list(TECHNICAL)


def list_consistency() -> list[str]:
    """Names of the registered replicate-consistency terms."""
    return list(CONSISTENCY)


def list_covariate_sets() -> list[str]:
    """Names of the registered covariate sets."""
    return list(COVARIATE_SETS)
