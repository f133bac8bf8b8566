"""chipvi.tl."""
