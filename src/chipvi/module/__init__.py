"""chipvi.module: the maths of ChIPVI (Pyro model, the exact chain, networks, likelihood); no AnnData."""

from ._chain import (
    ChainInputs,
    chain_backward,
    chain_log_likelihood,
    chain_posterior,
    posterior_piece_bins,
)
from ._consistency import mse_consistency
from ._covariates import ALL_COVARIATES, COVARIATE_SETS, CovariateBuilder
from ._mlp import MLP
from ._module import CONTEXT, GRID, OUTLIER, STAY, WINDOW_KEY, ChainMarginal, ChipviModule
from ._nb import NegativeBinomialMeanDisp, nb_log_prob
from ._overlap import OVERLAP
from ._registry import CONSISTENCY, TECHNICAL, list_consistency, list_covariate_sets, list_technical
from ._technical import (
    CONTROL_WINDOWS,
    TechnicalControlSlope,
    TechnicalMuR,
    TechnicalNet,
    TechnicalRP,
)

__all__ = [
    "CONTEXT",
    "CONTROL_WINDOWS",
    "GRID",
    "OUTLIER",
    "OVERLAP",
    "STAY",
    "WINDOW_KEY",
    "ALL_COVARIATES",
    "ChainInputs",
    "ChainMarginal",
    "CONSISTENCY",
    "COVARIATE_SETS",
    "ChipviModule",
    "CovariateBuilder",
    "MLP",
    "NegativeBinomialMeanDisp",
    "TECHNICAL",
    "TechnicalControlSlope",
    "TechnicalMuR",
    "TechnicalNet",
    "TechnicalRP",
    "chain_backward",
    "chain_log_likelihood",
    "chain_posterior",
    "list_consistency",
    "list_covariate_sets",
    "list_technical",
    "mse_consistency",
    "nb_log_prob",
    "posterior_piece_bins",
]
