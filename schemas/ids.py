"""Deterministic event ids: the same cause always yields the same id.

Replays and at-least-once redelivery therefore produce exact duplicates that consumers and
ClickHouse (ReplacingMergeTree on the id) can drop.
"""

from __future__ import annotations

import hashlib


def event_id(*parts: str) -> str:
    """First 32 hex chars of SHA-256 over the ``'|'``-joined parts.

    Parts must already be strings: ``1`` and ``"1"`` hashing alike by accident would hide bugs,
    so callers convert explicitly (``str(position)``).

    >>> event_id("drift", "churn", "FEATURE", "age", "ADWIN", "1006")
    'b6790cdc52b0443f6acf2105fcc13d49'
    """
    if not parts:
        raise ValueError("event_id needs at least one part")
    for part in parts:
        if not isinstance(part, str):
            raise TypeError(f"event_id parts must be str, got {type(part).__name__}: {part!r}")
    return hashlib.sha256("|".join(parts).encode("utf-8")).hexdigest()[:32]
