"""chipvi.datasets."""
