"""chipvi.model: user-facing model classes (scvi-tools style)."""

from ._chipvi import ChIPVI

__all__ = ["ChIPVI"]
