"""Storage: the ``Store`` interface and one implementation per engine."""

from __future__ import annotations

from connectlink.storage.base import Store


def open_store(url: str) -> Store:
    """The store a database URL names (``sqlite:///path``)."""
    if url.startswith("sqlite:"):
        from connectlink.storage.sqlite import SQLiteStore

        return SQLiteStore.from_url(url)
    raise ValueError(f"unsupported database URL {url!r}: use sqlite:///path/to.db")


__all__ = ["Store", "open_store"]
