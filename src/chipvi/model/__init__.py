"""chipvi.model: user-facing model classes (scvi-tools style)."""
