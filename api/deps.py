"""Dependencies as ``Annotated`` aliases: the control plane, the store, the caller's key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Header, HTTPException, Request, status
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from .auth import grants, parse_token, verify_secret
from .config import ApiConfig
from .control_plane import BaseControlPlane
from .ui.sessions import session_token

__all__ = [
    "ConfigDep",
    "ControlPlaneDep",
    "StoreDep",
    "OptionalStoreDep",
    "Principal",
    "authenticate",
    "ReadKey",
    "WriteKey",
    "AdminKey",
    "IfMatch",
    "parse_if_match",
]


def get_config(request: Request) -> ApiConfig:
    return request.app.state.config


def get_control_plane(request: Request) -> BaseControlPlane:
    return request.app.state.control_plane


def get_optional_store(request: Request) -> Any:
    return request.app.state.store


def get_store(request: Request) -> Any:
    store = request.app.state.store
    if store is None:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "no ClickHouse store is configured for the API (set DRIFTLINE_CLICKHOUSE_URL); "
            "history, alerts and dry-runs need one",
        )
    return store


ConfigDep = Annotated[ApiConfig, Depends(get_config)]
ControlPlaneDep = Annotated[BaseControlPlane, Depends(get_control_plane)]
# The store interface of driftline.sinks (``query(sql, parameters)``); Any keeps OpenAPI clean.
StoreDep = Annotated[Any, Depends(get_store)]
OptionalStoreDep = Annotated[Any, Depends(get_optional_store)]


@dataclass(frozen=True)
class Principal:
    """The API key a request was made with."""

    key_id: str
    name: str
    scopes: tuple[str, ...]

    @property
    def actor(self) -> str:
        return f"apikey:{self.key_id}/{self.name}"


_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer dl_<id>_<secret>`")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="`dl_<id>_<secret>`")


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"}
    )


def authenticate(
    request: Request,
    control_plane: ControlPlaneDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    api_key: Annotated[str | None, Depends(_header)],
) -> Principal:
    token = bearer.credentials if bearer is not None else api_key
    if not token:
        # The dashboard's session cookie (api/ui): the key it was opened with, CSRF-checked.
        token = session_token(request)
    if not token:
        raise _unauthorized(
            "missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>' "
            "(or log in at /ui/login)"
        )
    parsed = parse_token(token)
    if parsed is None:
        raise _unauthorized("malformed API key (expected dl_<id>_<secret>)")
    key_id, secret = parsed
    record = control_plane.get("apikey", key_id)
    if record is None and not control_plane.ready():
        # The view is still loading (the broker may not be up yet): the key may well exist.
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "the API is starting: its control-plane view (API keys) is not loaded yet",
            headers={"Retry-After": "5"},
        )
    if record is None or not verify_secret(secret, record.data.get("hash", "")):
        raise _unauthorized("invalid or revoked API key")
    return Principal(key_id, record.data.get("name", ""), tuple(record.data.get("scopes", ())))


def _require(scope: str) -> Any:
    def check(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
        if not grants(principal.scopes, scope):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"API key {principal.key_id} has scopes {list(principal.scopes)}; "
                f"this needs '{scope}'",
            )
        return principal

    return check


ReadKey = Annotated[Principal, Depends(_require("read"))]
WriteKey = Annotated[Principal, Depends(_require("write"))]
AdminKey = Annotated[Principal, Depends(_require("admin"))]


def parse_if_match(
    if_match: Annotated[
        str | None,
        Header(description='Version the change is based on, as sent in ETag: "3"'),
    ] = None,
) -> int | None:
    """The version in ``If-Match`` (``"3"``, ``W/"3"`` or ``3``); None when absent or ``*``."""
    if if_match is None or if_match.strip() == "*":
        return None
    text = if_match.strip().removeprefix("W/").strip('"')
    if not text.isdigit() or len(text) > 18:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            f'If-Match must be a version ETag like "3", got {if_match!r}',
        )
    return int(text)


IfMatch = Annotated[int | None, Depends(parse_if_match)]
