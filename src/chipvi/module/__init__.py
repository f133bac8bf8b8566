"""chipvi.module."""
