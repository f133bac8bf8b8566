"""chipvi: denoised, replicate-consistent ChIP-seq signal on AnnData.

Bins are observations, ChIP libraries are variables. ``read_bams`` builds the AnnData from BAM
files, :class:`ChIPVI` fits the Negative Binomial variational model, and ``pp`` / ``tl`` / ``pl``
follow scanpy's conventions.
"""

from __future__ import annotations

__version__ = "0.1.0"

from ._errors import ChipviInputError  # noqa: E402

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
    # The model pulls in torch, Pyro and scvi-tools, tl/pl scipy.stats, pyranges and
    # matplotlib, io pandas/anndata/pyBigWig (seconds to import together); every subpackage is
    # imported on first use, so `chipvi bin` pays only for what binning needs.
    if name == "ChIPVI":
        from .model import ChIPVI

        return ChIPVI
    if name in ("datasets", "io", "pl", "pp", "tl"):
        import importlib

        return importlib.import_module(f".{name}", __name__)
    if name in ("read_bams", "read_samplesheet"):
        from . import io

        return getattr(io, name)
    raise AttributeError(f"module 'chipvi' has no attribute {name!r}")
