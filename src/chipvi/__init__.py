"""chipvi: denoised, replicate-consistent ChIP-seq signal on AnnData.

Bins are observations, ChIP libraries are variables. ``read_bams`` builds the AnnData from BAM
files, :class:`ChIPVI` fits the Negative Binomial variational model, and ``pp`` / ``tl`` / ``pl``
follow scanpy's conventions; ``settings`` holds verbosity, threads, seed and progress bars.
"""

from __future__ import annotations

import lazy_loader as _lazy

__version__ = "0.1.0"

# The model pulls in torch, Pyro and scvi-tools, tl/pl scipy.stats, pyranges and matplotlib,
# io pandas/anndata/pyBigWig (seconds to import together): every name is imported on first use
# (SPEC 1, lazy_loader), so `chipvi bin` pays only for what binning needs and `dir(chipvi)`
# still lists the whole public API.
__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submodules=["datasets", "io", "pl", "pp", "tl"],
    submod_attrs={
        "_errors": ["ChipviInputError", "ChipviTrainingError"],
        "_settings": ["settings"],
        "io": ["read_bams", "read_samplesheet"],
        "model": ["ChIPVI"],
    },
)
__all__ = [*__all__, "__version__"]
