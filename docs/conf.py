"""Sphinx configuration for chipvi."""

from __future__ import annotations

import importlib.metadata

project = "chipvi"
author = "chipvi developers"
copyright = "2026, chipvi developers"
try:
    release = importlib.metadata.version("chipvi")
except importlib.metadata.PackageNotFoundError:  # building from a source tree without install
    release = "0.0.0"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
    "numpydoc",
    "myst_nb",
]
autosummary_generate = True
numpydoc_show_class_members = False
nb_execution_mode = "off"
intersphinx_mapping = {
    "python": ("https://docs.python.org/3", None),
    "anndata": ("https://anndata.readthedocs.io/en/stable/", None),
    "scvi": ("https://docs.scvi-tools.org/en/stable/", None),
    "numpy": ("https://numpy.org/doc/stable/", None),
    "pandas": ("https://pandas.pydata.org/docs/", None),
}
html_theme = "sphinx_book_theme"
exclude_patterns = ["_build"]
