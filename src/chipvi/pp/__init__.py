"""chipvi.pp."""
