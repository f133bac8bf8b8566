"""Sphinx configuration for chipvi.

Build (what CI and Read the Docs run)::

    pip install ".[docs]"
    sphinx-build -W --keep-going -b html docs docs/_build/html
"""

from __future__ import annotations

import importlib.metadata
import os
import threading
import time
import urllib.request

project = "chipvi"
author = "chipvi developers"
copyright = "2026, chipvi developers"
try:
    release = importlib.metadata.version("chipvi")
except importlib.metadata.PackageNotFoundError:  # building from a source tree without install
    import chipvi

    release = chipvi.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "myst_nb",
    "sphinxarg.ext",
]
templates_path = ["_templates"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints"]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
master_doc = "index"
# A Markdown link MyST cannot resolve is reported once (myst.xref_missing); without this each
# domain that cannot resolve "any" references (sphinx-argparse's) adds a second warning.
suppress_warnings = ["myst.domains"]

# -- API reference ------------------------------------------------------------------------------
autosummary_generate = True
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"show-inheritance": False}
# The class template (_templates/autosummary/class.rst) lists the members itself.
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = False

# -- MyST / notebooks ---------------------------------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
# Notebooks are stored with their outputs and rendered as they are. A notebook that is fast
# enough for CI opts in to execution in its own metadata,
#     "mystnb": {"execution_mode": "force"}
# and is then run at every build; a cell that raises fails the build.
nb_execution_mode = "off"
nb_execution_timeout = 300
nb_execution_raise_on_error = True
nb_execution_show_tb = True
# Run in a temporary folder so executed notebooks leave no files in the source tree.
nb_execution_in_temp = True
nb_merge_streams = True

# -- Intersphinx --------------------------------------------------------------------------------
_INTERSPHINX = {
    "python": ("https://docs.python.org/3/", None),
    "numpy": ("https://numpy.org/doc/stable/", None),
    "pandas": ("https://pandas.pydata.org/docs/", None),
    "anndata": ("https://anndata.readthedocs.io/en/stable/", None),
    "mudata": ("https://mudata.readthedocs.io/en/latest/", None),
    "scanpy": ("https://scanpy.readthedocs.io/en/stable/", None),
    "scvi": ("https://docs.scvi-tools.org/en/stable/", None),
    "pyro": ("https://docs.pyro.ai/en/stable/", None),
    "torch": ("https://docs.pytorch.org/docs/stable/", None),
    "matplotlib": ("https://matplotlib.org/stable/", None),
}


def _reachable(url: str, timeout: float = 5.0) -> bool:
    try:
        # GET, not HEAD: some documentation hosts refuse HEAD. The body is not read.
        with urllib.request.urlopen(url + "objects.inv", timeout=timeout) as response:  # noqa: S310 - fixed URLs
            return response.status < 400
    except Exception:  # noqa: BLE001 - any failure means "not reachable now"
        return False


def _intersphinx_mapping(deadline_s: float = 8.0) -> dict:
    """The inventories that can be fetched now; none offline.

    Sphinx warns (and ``-W`` fails the build) for every inventory it cannot fetch, and that
    warning has no type ``suppress_warnings`` could name. Offline (CI reaches only PyPI) the
    unreachable projects are left out instead: links to them become plain text, nothing else
    changes. The probes run in daemon threads with one deadline, so a resolver that hangs
    costs at most ``deadline_s``. ``CHIPVI_DOCS_OFFLINE=1`` skips them.
    """
    if os.environ.get("CHIPVI_DOCS_OFFLINE", "") not in ("", "0"):
        return {}
    ok: dict[str, bool] = {}

    def probe(name: str, url: str) -> None:
        ok[name] = _reachable(url)

    threads = [
        threading.Thread(target=probe, args=(name, url), daemon=True)
        for name, (url, _) in _INTERSPHINX.items()
    ]
    for t in threads:
        t.start()
    end = time.monotonic() + deadline_s
    for t in threads:
        t.join(max(0.0, end - time.monotonic()))
    missing = [name for name in _INTERSPHINX if not ok.get(name)]
    if missing:
        print(f"intersphinx: not reachable, links left as text: {', '.join(missing)}")
    return {name: target for name, target in _INTERSPHINX.items() if ok.get(name)}


intersphinx_mapping = _intersphinx_mapping()
intersphinx_timeout = 10

# -- HTML ---------------------------------------------------------------------------------------
html_theme = "sphinx_book_theme"
html_title = f"chipvi {release}"
html_theme_options = {
    "show_toc_level": 2,
    "navigation_with_keys": False,
}
html_static_path: list[str] = []
