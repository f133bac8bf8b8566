"""chipvi.tl."""

from ._differential import differential_enrichment as differential_enrichment
from ._genes import gene_expression_association as gene_expression_association
from ._profile import profile as profile
from ._qc import fingerprint as fingerprint
from ._qc import frip as frip
from ._qc import replicate_concordance as replicate_concordance
from ._regions import BROAD_DOMAINS as BROAD_DOMAINS
from ._regions import call_enriched_regions as call_enriched_regions
from ._strand import strand_cross_correlation as strand_cross_correlation

__all__ = [
    "BROAD_DOMAINS",
    "call_enriched_regions",
    "differential_enrichment",
    "fingerprint",
    "frip",
    "gene_expression_association",
    "profile",
    "replicate_concordance",
    "strand_cross_correlation",
]
