"""chipvi.tl: analysis tools on the AnnData (scanpy conventions).

Each tool takes the AnnData first, reads model outputs from the keys ``model.add_posterior``
wrote, and stores its result under ``key_added`` with its parameters in
``adata.uns[key_added]["params"]``. The QC tools and ``call_enriched_regions`` also take a bins
store (:func:`chipvi.io.open_store`), read a chunk at a time; they leave it unchanged on disk.
Names are imported from their module on first use (lazy_loader, as the root package), so
``import chipvi.tl`` stays cheap.
"""

from __future__ import annotations

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "_differential": ["differential_enrichment"],
        "_genes": ["gene_expression_association"],
        "_profile": ["profile"],
        "_qc": ["fingerprint", "frip", "replicate_concordance"],
        "_regions": ["BROAD_DOMAINS", "call_enriched_regions"],
        "_strand": ["strand_cross_correlation"],
    },
)
