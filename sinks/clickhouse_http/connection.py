"""The store's one chdb connection, as the HTTP interface borrows it per request.

Every request runs through :meth:`EmbeddedStore.locked_connection` (the engine lock), so the
owner's own inserts and the HTTP requests interleave statement by statement. A request may
need another database and other settings than the owner's: they are applied to the connection
for that statement and put back afterwards, so the owner (the worker) never sees them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from ..embedded import EmbeddedStore
from .errors import ClickHouseError
from .protocol import FORMAT_ALIASES, Outcome, Query
from .sessions import Session
from .sql import READ_KINDS, Statement, quote_ident, quote_literal, set_names
from .users import check_readonly

__all__ = ["EngineConnection"]

log = logging.getLogger(__name__)


class EngineConnection:
    """What the engine runs with when nobody asks otherwise, and how to borrow it.

    Read once at start: the engine's version and time zone, the connection's database and
    settings (the baseline every request's changes are undone to) and the output formats.
    """

    def __init__(self, store: EmbeddedStore) -> None:
        self.store = store
        with store.locked_connection() as conn:
            version, tz, current_db = _rows(
                conn, "SELECT version(), timezone(), currentDatabase()"
            )[0]
            values = _rows(conn, "SELECT name, value, changed FROM system.settings")
            formats = _rows(conn, "SELECT name, is_output FROM system.formats")
        self.version: str = version
        self.timezone: str = tz
        # The connection's own database: put back after every request that changes it.
        self.home_database: str = current_db
        # What the connection runs with: restored after each request that changes it.
        self._baseline = {name: value for name, value, changed in values if changed == "1"}
        self.settings: dict[str, str] = {name: value for name, value, _ in values}
        self.formats = {name.lower(): name for name, is_output in formats if is_output == "1"}
        self.formats.update(FORMAT_ALIASES)

    def run(self, query: Query, session: Session | None) -> Outcome:
        """Run ``query`` under the engine lock, in its database with its settings.

        The engine's own parser classifies the statement first; readonly requests must be
        reading statements in its opinion too (:func:`~.users.check_readonly`).
        """
        stmt = query.statement
        with self.store.locked_connection() as conn:
            # chdb's raw connection parses the statement without running it.
            info = getattr(conn, "_conn", conn).classify_query(stmt.sql)
            query_class = int(info["query_class"])  # READ_ONLY 0, MUTATING 1, GLOBAL 2, ...
            if info["statement_count"] > 1:
                raise ClickHouseError(62, "Multi-statements are not allowed")
            if query.readonly:
                check_readonly(stmt, query_class, query.readonly, query.method)
            sql, conn_settings = self._placed_settings(query, query_class)
            with self._applied(conn, query.database, conn_settings, stmt):
                outcome = self._statement(conn, query, sql, session)
        return Outcome(outcome.result, outcome.written, query_class)

    def _placed_settings(self, query: Query, query_class: int) -> tuple[str, Mapping[str, str]]:
        """The SQL to run and the settings to SET on the connection around it."""
        stmt, settings, readonly = query.statement, query.settings, query.readonly
        sql = stmt.sql
        outer: dict[str, str] = {}
        conn_settings = settings
        if stmt.kind in READ_KINDS and not stmt.settings_after_format:
            if query_class == 0:
                # A query takes the request's settings as a trailing SETTINGS clause: no SET
                # and reset on the shared connection, and the query's own SETTINGS still win
                # (inner clauses apply last), as they do over URL parameters.
                outer = {k: v for k, v in settings.items() if self.settings.get(k) != v}
                conn_settings = {}
                if query.max_execution_time and "max_execution_time" not in settings:
                    outer["max_execution_time"] = f"{query.max_execution_time:g}"
            if readonly:
                # Second guard: the engine itself refuses writes, table functions (readonly=1)
                # and setting changes in the statement.
                outer["readonly"] = str(readonly)
        elif readonly == 1 and stmt.settings_after_format:
            raise ClickHouseError(164, "Cannot modify settings in readonly mode")
        if outer:
            sql += "\nSETTINGS " + ", ".join(
                f"{quote_ident(k)} = {quote_literal(v)}" for k, v in outer.items()
            )
        return sql, conn_settings

    def _statement(self, conn: Any, query: Query, sql: str, session: Session | None) -> Outcome:
        stmt = query.statement
        if stmt.kind == "USE":
            conn.query(sql, "TabSeparated")
            if session is not None:
                session.database = _rows(conn, "SELECT currentDatabase()")[0][0]
            return Outcome()
        if stmt.kind == "SET":
            names = set_names(sql)
            conn.query(sql, "TabSeparated")
            if session is not None and names:
                listed = ", ".join(quote_literal(n) for n in names)
                session.settings.update(
                    _rows(conn, f"SELECT name, value FROM system.settings WHERE name IN ({listed})")
                )
            return Outcome()
        if stmt.data is not None:
            assert stmt.insert_format is not None
            inserter = conn.send_insert(sql, stmt.insert_format)
            try:
                if len(stmt.data):
                    inserter.append(stmt.data)
                return Outcome(written=inserter.finish())
            except BaseException:
                inserter.cancel()
                raise
        return Outcome(result=conn.query(sql, query.output_format, params=query.params))

    @contextmanager
    def _applied(
        self, conn: Any, database: str, settings: Mapping[str, str], stmt: Statement
    ) -> Iterator[None]:
        """Run with ``database`` current and ``settings`` set on the connection, then put the
        connection back as the store (and the worker) expects it: a ``USE`` or ``SET`` statement
        of the request itself is undone too (a session keeps it on its own side)."""
        # Settings equal to what the connection has (clickhouse-connect sends a few) cost a SET
        # and a reset for nothing.
        changed = {k: v for k, v in settings.items() if self.settings.get(k) != v}
        switched = database != self.home_database or stmt.kind == "USE"
        try:
            if switched:
                conn.query(f"USE {quote_ident(database)}", "TabSeparated")
            if changed:
                assignments = ", ".join(
                    f"{quote_ident(k)} = {quote_literal(v)}" for k, v in changed.items()
                )
                conn.query(f"SET {assignments}", "TabSeparated")
            yield
        finally:
            names = set(changed)
            if stmt.kind == "SET":
                names.update(n for n in set_names(stmt.sql) if n in self.settings)
            self._restore(conn, switched, names)

    def _restore(self, conn: Any, switched: bool, names: set[str]) -> None:
        try:
            if names:
                resets = ", ".join(
                    f"{quote_ident(k)} = {quote_literal(self._baseline[k])}"
                    if k in self._baseline
                    else f"{quote_ident(k)} = DEFAULT"
                    for k in sorted(names)
                )
                conn.query(f"SET {resets}", "TabSeparated")
            if switched:
                conn.query(f"USE {quote_ident(self.home_database)}", "TabSeparated")
        except Exception:
            # Should not happen (only known names reach SET); if it does, say so loudly: the
            # worker's inserts now run with a stray setting or database.
            log.exception("could not restore the embedded connection after an HTTP request")


def _rows(conn: Any, sql: str) -> list[list[str]]:
    # JSON strings, not TSV: setting values may hold tabs and backslashes, and a value restored
    # from an escaped form would be a different value.
    raw = conn.query(sql, "JSONCompactStringsEachRow").bytes().decode()
    return [json.loads(line) for line in raw.splitlines()]
