"""Users, authentication and ClickHouse's ``readonly`` levels.

A user is ``name -> (password, readonly)``. Readonly users get ClickHouse's ``readonly=1``:
reading statements and ``USE`` only, no ``SET``, no settings in the URL or the query (unless
equal to the current value), no table functions. ``GET`` implies ``readonly=2`` for every user
(reads, and settings allowed), as in ClickHouse, so writes need ``POST``.
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Mapping

from .errors import ClickHouseError
from .sql import READ_KINDS, Statement, set_names

__all__ = [
    "Users",
    "DEFAULT_USERS",
    "authenticate",
    "readonly_level",
    "check_readonly",
    "check_setting_change",
]

Users = Mapping[str, tuple[str, bool]]  # user -> (password, readonly)

# ClickHouse's out-of-the-box user: "default" without a password, full rights.
DEFAULT_USERS: Users = {"default": ("", False)}

# classify_query's query classes (chdb): READ_ONLY 0, MUTATING 1, GLOBAL 2, CONTROL 3, 4 reads
# too (EXPLAIN and the like).
_READING_CLASSES = (0, 4)


def authenticate(
    users: Users, params: Mapping[str, str], headers: Mapping[str, str]
) -> tuple[str, bool]:
    """``(user, readonly)`` for the request's credentials, read as ClickHouse reads them:
    ``X-ClickHouse-User``/``-Key`` headers, else HTTP basic auth, else ``user``/``password``
    URL parameters; none of them means user ``default`` without password.

    >>> authenticate({"ro": ("pw", True)}, {"user": "ro", "password": "pw"}, {})
    ('ro', True)
    """
    user = password = None
    if headers.get("X-ClickHouse-User") is not None:
        user, password = headers["X-ClickHouse-User"], headers.get("X-ClickHouse-Key", "")
    elif headers.get("Authorization", "").lower().startswith("basic "):
        try:
            decoded = base64.b64decode(headers["Authorization"][6:].strip()).decode()
        except ValueError as exc:
            raise ClickHouseError(516, "Invalid Basic authorization header") from exc
        user, _, password = decoded.partition(":")
    elif "user" in params:
        user, password = params["user"], params.get("password", "")
    user = user or "default"
    password = password or ""
    entry = users.get(user)
    # compare_digest on both branches: no timing difference between unknown user and wrong
    # password.
    expected = entry[0] if entry else "\0" + password
    if not hmac.compare_digest(expected.encode(), password.encode()) or entry is None:
        raise ClickHouseError(
            516,
            f"{user}: Authentication failed: password is incorrect, "
            "or there is no user with such name",
        )
    return user, entry[1]


def readonly_level(params: Mapping[str, str], method: str, user_readonly: bool) -> int:
    """The request's ``readonly``: 1 for readonly users (a request cannot lower it), what the
    ``readonly`` parameter asks otherwise, and at least 2 for ``GET``.

    >>> readonly_level({}, "GET", False), readonly_level({}, "POST", True)
    (2, 1)
    """
    readonly = 1 if user_readonly else 0
    if "readonly" in params:
        try:
            asked = int(params["readonly"])
        except ValueError as exc:
            raise ClickHouseError(36, "readonly must be 0, 1 or 2") from exc
        if user_readonly and asked != 1:
            raise ClickHouseError(164, "Cannot modify 'readonly' setting in readonly mode")
        readonly = max(readonly, asked)
    if method == "GET" and readonly == 0:
        readonly = 2
    return readonly


def check_setting_change(readonly: int, name: str, value: str, current: str | None) -> None:
    """Refuse a URL setting under ``readonly=1`` unless it equals the current value (what
    clickhouse-connect sends by default must not lock readonly users out)."""
    if readonly == 1 and current != value:
        raise ClickHouseError(164, f"Cannot modify '{name}' setting in readonly mode")


def check_readonly(stmt: Statement, query_class: int, readonly: int, method: str) -> None:
    """Refuse ``stmt`` under ``readonly`` (1 or 2). ``query_class`` is the engine parser's
    opinion (chdb's ``classify_query``); the statement's first keyword must agree with it."""
    allowed = (stmt.kind in READ_KINDS and query_class in _READING_CLASSES) or stmt.kind == "USE"
    if stmt.kind == "SET":
        if readonly == 1:
            raise ClickHouseError(164, "Cannot modify settings in readonly mode")
        if "readonly" in (n.lower() for n in set_names(stmt.sql)):
            raise ClickHouseError(164, "Cannot modify 'readonly' setting in readonly mode")
        allowed = True
    if not allowed:
        hint = (
            ". For queries over HTTP, method GET implies readonly. "
            "You should use method POST for modifying queries"
            if method == "GET" and readonly == 2
            else ""
        )
        raise ClickHouseError(164, f"Cannot execute query in readonly mode{hint}")
