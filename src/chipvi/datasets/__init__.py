"""chipvi.datasets: simulated data with known truth and the bundled real data set."""

from ._simulate import Simulation, simulate

__all__ = ["Simulation", "simulate"]
