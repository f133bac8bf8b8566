"""chipvi.io."""

from . import encode  # noqa: F401
