"""chipvi.tl."""

from ._regions import call_enriched_regions
