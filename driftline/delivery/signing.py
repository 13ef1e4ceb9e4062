"""Webhook signatures: HMAC-SHA256 of the raw request body with the subscription's secret.

>>> header = sign("s3cret-s3cret-16", b'{"a":1}')
>>> header.startswith("sha256="), verify("s3cret-s3cret-16", b'{"a":1}', header)
(True, True)
>>> verify("s3cret-s3cret-16", b'{"a":2}', header)
False
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

__all__ = ["EVENT_ID_HEADER", "SIGNATURE_HEADER", "TIMESTAMP_HEADER", "sign", "verify"]

SIGNATURE_HEADER: Final = "X-Driftline-Signature"
TIMESTAMP_HEADER: Final = "X-Driftline-Timestamp"
EVENT_ID_HEADER: Final = "X-Driftline-Event-Id"
_PREFIX: Final = "sha256="


def sign(secret: str, body: bytes) -> str:
    """The ``X-Driftline-Signature`` value for ``body``: ``sha256=<hex digest>``."""
    return _PREFIX + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str | None) -> bool:
    """Whether ``header`` is the signature of ``body`` (constant-time comparison)."""
    if not header or not header.startswith(_PREFIX):
        return False
    return hmac.compare_digest(sign(secret, body), header)
