"""chipvi: denoised, replicate-consistent ChIP-seq signal on AnnData.

Bins are observations, ChIP libraries are variables. ``read_bams`` builds the AnnData from BAM
files, :class:`ChIPVI` fits the Negative Binomial variational model, and ``pp`` / ``tl`` / ``pl``
follow scanpy's conventions.
"""

from __future__ import annotations

__version__ = "0.1.0"

from . import datasets, io, pp  # noqa: E402  (io never imports torch)
from ._errors import ChipviInputError  # noqa: E402
from .io import read_bams, read_samplesheet  # noqa: E402

__all__ = [
    "ChIPVI",
    "ChipviInputError",
    "datasets",
    "io",
    "pl",
    "pp",
    "read_bams",
    "read_samplesheet",
    "tl",
    "__version__",
]


def __getattr__(name: str):
    # The model pulls in torch, Pyro and scvi-tools, and tl/pl scipy.stats, pyranges and
    # matplotlib (seconds to import together); binning and I/O need none of them, so these are
    # imported on first use and `chipvi bin` starts fast.
    if name == "ChIPVI":
        from .model import ChIPVI

        return ChIPVI
    if name in ("tl", "pl"):
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'chipvi' has no attribute {name!r}")
