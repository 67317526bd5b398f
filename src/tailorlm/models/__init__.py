"""Base models: catalog names, local folders, hub ids, GGUF files, and the conversion cache."""

from tailorlm.models.backend import Backend, LocalBackend
from tailorlm.models.catalog import CATALOG, DEFAULT_MODEL, CatalogEntry
from tailorlm.models.load import best_dtype, load_backend

__all__ = ["Backend", "LocalBackend", "CATALOG", "CatalogEntry", "DEFAULT_MODEL", "best_dtype", "load_backend"]
