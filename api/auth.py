"""API keys: ``dl_<id>_<secret>``, kept on the control plane as ``apikey:<id>`` records holding
only the sha256 of the secret, the name and the scopes.

Scopes nest: ``admin`` ⊃ ``write`` ⊃ ``read``.

>>> token, record = new_api_key(name="ci", scopes=["read"])
>>> parse_token(token)[0] == record["id"], verify_secret(parse_token(token)[1], record["hash"])
(True, True)
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from typing import Any

from .catalog import SCOPES

__all__ = ["new_api_key", "parse_token", "hash_secret", "verify_secret", "grants", "PREFIX"]

PREFIX = "dl"
_TOKEN = re.compile(r"^dl_([a-z0-9]{12})_([A-Za-z0-9_-]{43})$")
_RANK = {"read": 1, "write": 2, "admin": 3}


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def verify_secret(secret: str, expected_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), expected_hash)


def parse_token(token: str) -> tuple[str, str] | None:
    """``(id, secret)`` of a well-formed key, else None."""
    match = _TOKEN.match(token.strip())
    return (match[1], match[2]) if match else None


def new_api_key(*, name: str, scopes: Iterable[str]) -> tuple[str, dict[str, Any]]:
    """A fresh key: the token (shown once) and the ``data`` of its ``apikey:<id>`` record."""
    scopes = sorted(set(scopes))
    if not scopes or any(s not in SCOPES for s in scopes):
        raise ValueError(f"scopes must be a non-empty subset of {list(SCOPES)}, got {scopes}")
    scopes.sort(key=_RANK.__getitem__)
    ident = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)  # 32 random bytes -> 43 url-safe characters
    token = f"{PREFIX}_{ident}_{secret}"
    return token, {"id": ident, "name": name, "scopes": scopes, "hash": hash_secret(secret)}


def grants(scopes: Iterable[str], needed: str) -> bool:
    """Whether a key with ``scopes`` may do what ``needed`` allows."""
    return max((_RANK.get(s, 0) for s in scopes), default=0) >= _RANK[needed]
