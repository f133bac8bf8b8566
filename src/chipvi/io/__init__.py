"""chipvi.io."""
