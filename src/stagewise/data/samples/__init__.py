"""The sample store: data prepared once, opened in milliseconds (see ``store.py``)."""

from stagewise.data.samples.format import FORMAT_VERSION, StoreMetadata
from stagewise.data.samples.store import SampleStore, is_store, list_versions, open_store
from stagewise.data.samples.verify import verify_store
from stagewise.data.samples.writer import StoreWriter

__all__ = [
    "FORMAT_VERSION",
    "SampleStore",
    "StoreMetadata",
    "StoreWriter",
    "is_store",
    "list_versions",
    "open_store",
    "verify_store",
]
