"""chipvi.pl."""
