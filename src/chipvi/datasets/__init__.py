"""chipvi.datasets: simulated data with known truth and the bundled real data set.

Names are imported from their module on first use (lazy_loader, as the root package).
"""

from __future__ import annotations

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "_cssq": ["CSSQ_REGION", "cssq_chr19", "cssq_chr19_samplesheet"],
        "_simulate": ["Simulation", "simulate"],
        "_spec": ["SCENARIOS", "SimulationSpec"],
    },
)
