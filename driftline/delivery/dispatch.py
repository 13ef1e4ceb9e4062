"""Sending HTTP deliveries: retries with backoff, and one lane per target so a slow or dead
target only delays its own deliveries.

A *lane* is a target's semaphore (at most ``per_target_concurrency`` requests in flight to it)
and a bound on how many deliveries may wait for it (``max_queue_per_target``); past that bound
a delivery fails at once ("target queue full") and is dead-lettered by the caller, so a target
that hangs cannot hold an unbounded share of the service's in-flight alerts. Every request has
a total deadline (``RetryPolicy.timeout``), so a hanging target frees its lane slot after at
most ``max_tries`` deadlines plus the backoff sleeps.

A delivery may also be *superseded* (a newer state of the same alert is known, see
:mod:`.ordering`): it is then checked before every try and during the backoff sleeps, and
ends without another request (``Outcome.superseded``), so a retry never carries a stale state.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, Final

import httpx

__all__ = ["Dispatcher", "Outcome", "RetryPolicy", "is_retryable_status"]


def is_retryable_status(status: int) -> bool:
    """5xx and 429 are worth another try; any other 4xx will not change by trying again."""
    return status == 429 or status >= 500


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded tries with exponential backoff and full jitter.

    Try ``n`` (1-based) that failed retryably is followed by a sleep drawn uniformly from
    ``[0, min(backoff_max, backoff_base * 2 ** (n - 1))]`` (or the target's ``Retry-After``,
    capped at ``backoff_max``, when that is longer).
    """

    max_tries: int = 5
    timeout: float = 10.0  # total seconds per try: connect + send + wait + read
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    jitter: bool = True

    def __post_init__(self) -> None:
        if self.max_tries < 1:
            raise ValueError("max_tries must be >= 1")
        if self.timeout <= 0:
            raise ValueError("timeout must be > 0")
        if self.backoff_base < 0 or self.backoff_max < 0:
            raise ValueError("backoff_base and backoff_max must be >= 0")

    def delay(self, tries: int, retry_after: float | None = None) -> float:
        ceiling = min(self.backoff_max, self.backoff_base * 2 ** (tries - 1))
        delay = random.uniform(0, ceiling) if self.jitter else ceiling
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.backoff_max))
        return delay


@dataclass
class Outcome:
    """How one delivery ended: ``ok``, or the last status/error after ``tries`` tries."""

    ok: bool
    tries: int
    status: int | None = None
    error: str | None = None
    target: str = ""
    superseded: bool = False  # stopped because a newer state of the alert exists

    def detail(self) -> str:
        if self.superseded:
            return f"target={self.target} tries={self.tries} superseded by a newer state"
        last = f"HTTP {self.status}" if self.status is not None else (self.error or "?")
        return f"target={self.target} tries={self.tries} last={last}"


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


@dataclass
class _Lane:
    semaphore: asyncio.Semaphore
    waiting: int = 0


@dataclass
class Dispatcher:
    """Posts bodies to targets with the retry policy, one lane per target key."""

    policy: RetryPolicy = field(default_factory=RetryPolicy)
    per_target_concurrency: int = 4
    max_queue_per_target: int = 256
    client: httpx.AsyncClient | None = None
    sleep: Callable[[float], Any] = asyncio.sleep  # tests may shorten backoff through policy

    def __post_init__(self) -> None:
        self._lanes: dict[str, _Lane] = {}
        self._own_client = self.client is None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _client(self) -> httpx.AsyncClient:
        # Pooled connections and lane semaphores belong to one event loop: a dispatcher used
        # from a new loop (asyncio.run again) starts afresh instead of touching a closed one.
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop = loop
            self._lanes = {}
            if self._own_client:
                self.client = None
        if self.client is None:
            # No global connection cap: lanes bound each target, and a shared pool cap would
            # let a hanging target starve the others of connections.
            self.client = httpx.AsyncClient(
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
                timeout=httpx.Timeout(self.policy.timeout),
                follow_redirects=False,
            )
        return self.client

    async def aclose(self) -> None:
        if self._own_client and self.client is not None:
            await self.client.aclose()
            self.client = None

    def waiting(self, target: str) -> int:
        lane = self._lanes.get(target)
        return lane.waiting if lane else 0

    async def post(
        self,
        target: str,
        url: str,
        body: bytes | Callable[[], bytes],
        headers: Callable[[], Mapping[str, str]] | Mapping[str, str],
        *,
        superseded: Callable[[], bool] | None = None,
        concurrency: int | None = None,
    ) -> Outcome:
        """POST ``body`` to ``url`` until it is accepted (2xx), refused (4xx other than 429),
        out of tries or ``superseded()``. ``headers`` may be a callable, evaluated per try
        (timestamps); so may ``body`` (a re-send of what is current at each try).
        ``concurrency`` overrides ``per_target_concurrency`` for a lane created by this call."""
        client = self._client()
        lane = self._lanes.get(target)
        if lane is None:
            lane = self._lanes[target] = _Lane(
                asyncio.Semaphore(concurrency or self.per_target_concurrency)
            )
        if lane.waiting >= self.max_queue_per_target:
            return Outcome(False, 0, error="target queue full", target=target)
        lane.waiting += 1
        try:
            async with lane.semaphore:
                return await self._post_with_retries(
                    client, target, url, body, headers, superseded or _never
                )
        finally:
            lane.waiting -= 1

    async def _post_with_retries(
        self,
        client: httpx.AsyncClient,
        target: str,
        url: str,
        body: bytes | Callable[[], bytes],
        headers: Callable[[], Mapping[str, str]] | Mapping[str, str],
        superseded: Callable[[], bool],
    ) -> Outcome:
        tries = 0
        while True:
            if superseded():
                return Outcome(False, tries, target=target, superseded=True)
            tries += 1
            retry_after = None
            try:
                async with asyncio.timeout(self.policy.timeout):
                    response = await client.post(
                        url,
                        content=body() if callable(body) else body,
                        headers=dict(headers() if callable(headers) else headers),
                    )
                    await response.aread()
            except (TimeoutError, httpx.TransportError) as exc:
                outcome = Outcome(False, tries, error=f"{type(exc).__name__}: {exc}".rstrip(": "),
                                  target=target)  # fmt: skip
            else:
                if 200 <= response.status_code < 300:
                    return Outcome(True, tries, status=response.status_code, target=target)
                outcome = Outcome(False, tries, status=response.status_code, target=target)
                if not is_retryable_status(response.status_code):
                    return outcome  # final: the target refused this delivery
                retry_after = _retry_after(response)
            if tries >= self.policy.max_tries:
                return outcome
            await self._backoff(self.policy.delay(tries, retry_after), superseded)

    async def _backoff(self, delay: float, superseded: Callable[[], bool]) -> None:
        """Sleep ``delay`` seconds, ending early once superseded. Checked in short slices
        rather than woken by an event: a predicate is free of any event loop's ties."""
        if superseded is _never:
            await self.sleep(delay)
            return
        end = time.monotonic() + delay
        while not superseded():
            left = end - time.monotonic()
            if left <= 0:
                return
            await self.sleep(min(left, _SUPERSEDED_CHECK))


_SUPERSEDED_CHECK: Final = 0.1  # seconds between checks during a backoff sleep


def _never() -> bool:
    return False
