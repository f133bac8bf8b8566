"""chipvi.datasets: simulated data with known truth and the bundled real data set."""

from ._cssq import cssq_chr19, cssq_chr19_samplesheet
from ._simulate import Simulation, simulate
from ._spec import SCENARIOS, SimulationSpec

__all__ = [
    "SCENARIOS",
    "Simulation",
    "SimulationSpec",
    "cssq_chr19",
    "cssq_chr19_samplesheet",
    "simulate",
]
