"""Enrichment: the Generic Materializer and its lookup sources."""

from usersignals.enrich.materializer import Materializer, MaterializerStats
from usersignals.enrich.sources import LookupSource, Record, TableSource
from usersignals.enrich.tables import load_table

__all__ = [
    "LookupSource",
    "Materializer",
    "MaterializerStats",
    "Record",
    "TableSource",
    "load_table",
]
