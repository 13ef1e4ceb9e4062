"""The one interface both ClickHouse stores implement, and the migration runner they share.

A store is deliberately small: DDL (``command``), columnar batch inserts (``insert``), and reads
(``query`` / ``query_df``). Everything else (which tables exist, how events become columns) lives
in :mod:`driftline.sinks.tables`, so the embedded and server stores cannot drift apart.
"""

from __future__ import annotations

import hashlib
import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import pandas as pd

from .tables import TABLES, columns_for

__all__ = [
    "Store",
    "StoreError",
    "StoreUnavailable",
    "Migration",
    "load_migrations",
    "split_statements",
]

log = logging.getLogger(__name__)

DEFAULT_TTL_DAYS = 180
_MIGRATION_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class StoreError(RuntimeError):
    """A store operation failed and retrying the same operation cannot help: bad SQL, a type
    mismatch, a missing table, a misconfiguration."""


class StoreUnavailable(StoreError):
    """The store could not be reached or is overloaded or restarting: the same operation may
    succeed later. Callers wait (``ping()`` plus
    :func:`driftline.sinks.resilience.wait_until`) and retry; inserts are idempotent, so a
    retried batch that had in fact landed is not stored twice."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()[:16]

    def statements(self, **substitutions: object) -> list[str]:
        """The migration's statements with ``{name}`` placeholders substituted.

        A substitution of ``None`` drops every line holding that placeholder: that is how
        ``ttl_days=None`` leaves out the ``TTL ... {ttl_days} DAY`` clauses.
        """
        lines = self.sql.splitlines()
        for key, value in substitutions.items():
            placeholder = "{" + key + "}"
            if value is None:
                lines = [line for line in lines if placeholder not in line]
            else:
                lines = [line.replace(placeholder, str(value)) for line in lines]
        return split_statements("\n".join(lines))


def split_statements(sql: str) -> list[str]:
    """Split a script at ``;`` outside quotes, dropping ``--`` comments and empty statements."""
    statements, buf, quote = [], [], ""
    i = 0
    while i < len(sql):
        ch = sql[i]
        if quote:
            buf.append(ch)
            if ch == "\\" and i + 1 < len(sql):
                buf.append(sql[i + 1])
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "'`\"":
            quote = ch
            buf.append(ch)
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            i = len(sql) if end < 0 else end
            continue
        elif ch == ";":
            statements.append("".join(buf).strip())
            buf = []
        else:
            buf.append(ch)
        i += 1
    statements.append("".join(buf).strip())
    return [s for s in statements if s]


def load_migrations() -> list[Migration]:
    """The packaged ``migrations/NNNN_name.sql`` files, in version order."""
    found = []
    for entry in resources.files("driftline.sinks").joinpath("migrations").iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), entry.name[:-4], entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise StoreError(f"duplicate migration versions: {versions}")
    return found


def _applied_before(statement: str, error: StoreError) -> bool:
    """An ``ALTER TABLE ... ADD COLUMN`` whose column is already there was applied before: by
    another worker migrating the same store at the same moment, or by a run interrupted before
    it recorded the migration. ClickHouse applies an ALTER's commands together, so a column
    that exists means the rest of that ALTER (a ``MODIFY ORDER BY`` that must come in the same
    statement as the column it adds, and so cannot say ``IF NOT EXISTS``) was applied too."""
    return statement.lstrip().upper().startswith("ALTER TABLE") and "DUPLICATE_COLUMN" in str(
        error
    )


class Store(ABC):
    """A ClickHouse database holding driftline's tables.

    ``database`` is the ClickHouse database every migration creates its tables in; unqualified
    table names in ``insert``/``query`` resolve there. ``ttl_days`` is the retention of raw
    events (predictions, outcomes, joined labels, detector stats), fixed when a table is
    created; ``None`` creates the tables without TTL. Beware: rows whose time is already older
    than the TTL when inserted (backfills, fixtures with 2023 timestamps) are deleted by the
    next background merge, seconds later.
    """

    database: str
    ttl_days: int | None

    def __init__(self, database: str, *, ttl_days: int | None = DEFAULT_TTL_DAYS) -> None:
        if not _IDENT.match(database):
            raise ValueError(f"database name must be a plain identifier, got {database!r}")
        if ttl_days is not None and ttl_days <= 0:
            raise ValueError(f"ttl_days must be positive, got {ttl_days}")
        self.database = database
        self.ttl_days = ttl_days
        self._types: dict[str, dict[str, str]] = {}

    # -- the interface ------------------------------------------------------------------

    @abstractmethod
    def command(self, sql: str) -> None:
        """Run one statement that returns nothing (DDL, ``OPTIMIZE``, ``SYSTEM`` ...)."""

    @abstractmethod
    def insert(
        self,
        table: str,
        columns: Mapping[str, Sequence[Any] | Any],
        *,
        dedup_token: str | None = None,
    ) -> int:
        """Insert one columnar batch; returns the number of rows sent.

        ``columns`` maps column names to equal-length lists or numpy arrays (times as epoch
        ms ints, datetimes or datetime64); columns left out take their DEFAULT. With
        ``dedup_token`` an exact replay of the same batch into the same table is dropped by
        ClickHouse (``insert_deduplication_token``; the table keeps the last 1000 tokens).
        """

    @abstractmethod
    def query(self, sql: str, parameters: Mapping[str, Any] | None = None) -> list[tuple]:
        """Rows of a SELECT as tuples. Bind values with ``{name:Type}`` placeholders."""

    @abstractmethod
    def query_df(self, sql: str, parameters: Mapping[str, Any] | None = None) -> pd.DataFrame:
        """A SELECT as a pandas DataFrame."""

    @abstractmethod
    def close(self) -> None:
        """Release the connection. Idempotent."""

    def ping(self) -> bool:
        """True if the store answers now. Cheap, never raises, never retries: for readiness
        probes and :func:`~driftline.sinks.resilience.wait_until`."""
        try:
            self.query("SELECT 1")
            return True
        except StoreError:
            return False

    # -- shared behaviour ---------------------------------------------------------------

    def insert_rows(
        self, table: str, rows: Iterable[Mapping[str, Any]], *, dedup_token: str | None = None
    ) -> int:
        """Insert row dicts as one columnar batch.

        For driftline's tables the rows are decoded events (see
        :func:`~driftline.sinks.tables.columns_for`); for others, every row has the same keys.
        """
        rows = list(rows)
        if not rows:
            return 0
        if table in TABLES:  # driftline's own tables: validated, nulls and defaults handled
            columns = columns_for(table, rows)
        else:
            columns = {name: [row.get(name) for row in rows] for name in rows[0]}
        return self.insert(table, columns, dedup_token=dedup_token)

    def column_types(self, table: str) -> dict[str, str]:
        """Column name -> ClickHouse type of ``table`` as the server has it (cached)."""
        if table not in self._types:
            database, _, name = table.rpartition(".")
            rows = self.query(
                "SELECT name, type FROM system.columns "
                "WHERE database = {db:String} AND table = {t:String} ORDER BY position",
                {"db": database or self.database, "t": name},
            )
            if not rows:
                raise StoreError(f"no table {self.database}.{table}")
            self._types[table] = {name: typ for name, typ in rows}
        return self._types[table]

    def migrate(self) -> list[str]:
        """Apply pending migrations in version order; returns the names applied.

        Each statement is idempotent (``IF NOT EXISTS``, or an ``ALTER ... ADD COLUMN`` whose
        column is found present: :func:`_applied_before`), so a migration interrupted half-way,
        or run by two workers at once, is simply re-run; a migration is recorded in ``schema_migrations`` only once all of its
        statements succeeded. Raises :class:`StoreUnavailable` at once when the store is down
        (one ping, no retry budget spent): the caller decides how long to wait.
        """
        if not self.ping():
            raise StoreUnavailable(f"{self!r} is not reachable; migrations not applied")
        db = self.database
        self.command(f"CREATE DATABASE IF NOT EXISTS {db}")
        self.command(
            f"CREATE TABLE IF NOT EXISTS {db}.schema_migrations ("
            " version UInt32, name String, checksum String,"
            " applied_at DateTime64(3, 'UTC') DEFAULT now64(3))"
            " ENGINE = ReplacingMergeTree ORDER BY version"
        )
        recorded = {
            version: checksum
            for version, checksum in self.query(
                f"SELECT version, checksum FROM {db}.schema_migrations FINAL"
            )
        }
        applied = []
        for migration in load_migrations():
            if migration.version in recorded:
                if recorded[migration.version] != migration.checksum:
                    # Applied DDL is history: changing a file does not change the tables.
                    log.warning(
                        "migration %s changed after it was applied; add a new migration instead",
                        migration.name,
                    )
                continue
            for statement in migration.statements(database=db, ttl_days=self.ttl_days):
                try:
                    self.command(statement)
                except StoreError as exc:
                    if not _applied_before(statement, exc):
                        raise
            self.insert(
                "schema_migrations",
                {
                    "version": [migration.version],
                    "name": [migration.name],
                    "checksum": [migration.checksum],
                },
            )
            applied.append(migration.name)
            log.info("applied migration %s to %s", migration.name, db)
        self._types.clear()
        return applied

    def applied_migrations(self) -> list[str]:
        return [
            name
            for (name,) in self.query(
                f"SELECT name FROM {self.database}.schema_migrations FINAL ORDER BY version"
            )
        ]

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
