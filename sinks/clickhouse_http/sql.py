"""Just enough SQL lexing for the ClickHouse HTTP interface (:mod:`driftline.sinks.clickhouse_http`).

The HTTP interface receives one statement, possibly followed by raw insert data
(``INSERT INTO t FORMAT Native\\n<binary>``), and must know, before the engine sees it:

* where the SQL ends and the insert data begins, and in which input format;
* which output format a ``FORMAT`` clause asks for (for the ``X-ClickHouse-Format`` and
  ``Content-Type`` headers);
* the statement's first keyword (for readonly users and the GET-implies-readonly rule), and
  whether it writes a file (``INTO OUTFILE``), which a server never allows.

The lexer works on bytes and stops at the insert data, so binary payloads are never scanned.
Strings, quoted identifiers and comments are skipped as units, so a ``FORMAT`` inside a string,
a comment or parentheses is not mistaken for the clause. The engine's own parser
(``classify_query``) is the second opinion for everything security-relevant.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = [
    "READ_KINDS",
    "Statement",
    "parse_statement",
    "quote_ident",
    "quote_literal",
    "set_names",
]

# Unterminated strings and comments run to the end of input instead of failing: the engine
# reports the syntax error, and nothing after them is taken for a clause.
_TOKEN = re.compile(
    rb"""
    (?P<ws>\s+)
  | (?P<comment>--[^\n]*|/\*.*?(?:\*/|\Z))
  | (?P<string>'(?:[^'\\]|\\.|'')*(?:'|\Z))
  | (?P<qident>"(?:[^"\\]|\\.|"")*(?:"|\Z)|`(?:[^`\\]|\\.|``)*(?:`|\Z))
  | (?P<word>[A-Za-z_][A-Za-z0-9_$]*)
  | (?P<num>[0-9][A-Za-z0-9_.]*)
  | (?P<open>[(\[])
  | (?P<close>[)\]])
  | (?P<semi>;)
  | (?P<other>.)
    """,
    re.S | re.X,
)

# First keywords of statements that only read (plus USE/SET, which change the session only).
READ_KINDS = frozenset(
    {"SELECT", "WITH", "SHOW", "DESC", "DESCRIBE", "EXISTS", "EXPLAIN", "CHECK", "("}
)


@dataclass(frozen=True)
class Token:
    kind: str
    text: bytes
    start: int
    end: int

    @property
    def upper(self) -> str:
        return self.text.decode("latin-1").upper()


def _tokens(data: bytes | memoryview, pos: int = 0) -> Iterator[Token]:
    n = len(data)
    while pos < n:
        m = _TOKEN.match(data, pos)
        assert m is not None  # (?P<other>.) matches any byte
        kind = m.lastgroup or "other"
        if kind not in ("ws", "comment"):
            yield Token(kind, m.group(), m.start(), m.end())
        pos = m.end()


@dataclass(frozen=True)
class Statement:
    """One statement as the HTTP interface will run it."""

    sql: str  # SQL for the engine (for an insert with data: without the FORMAT clause)
    kind: str  # first keyword, upper case ("SELECT", "INSERT", ...), "(" or "" if empty
    output_format: str | None = None  # a trailing FORMAT clause of a query
    insert_format: str | None = None  # INSERT ... FORMAT <this>, data follows
    data: memoryview | None = None  # the insert data (may be empty)
    into_outfile: bool = False
    multiple: bool = False  # more than one statement
    # "... FORMAT x SETTINGS ...": nothing may be appended (a second SETTINGS clause after
    # this one is a syntax error, while after "... SETTINGS a = 1" it is fine).
    settings_after_format: bool = False


def _decode(raw: bytes | memoryview) -> str:
    # Invalid UTF-8 in SQL text becomes U+FFFD; the engine then reports what it cannot parse.
    return bytes(raw).decode("utf-8", errors="replace")


def _data_start(data: bytes | memoryview, pos: int) -> int:
    """ClickHouse's rule: after the format name, skip spaces and tabs, then one line break."""
    n = len(data)
    while pos < n and data[pos] in b" \t\f":
        pos += 1
    if pos < n and data[pos] == 0x0D:
        pos += 1
    if pos < n and data[pos] == 0x0A:
        pos += 1
    return pos


def parse_statement(data: bytes | memoryview, formats: dict[str, str] | None = None) -> Statement:
    """Split ``data`` (query text, possibly followed by insert data) into a :class:`Statement`.

    ``formats`` maps lower-case format names to their canonical spelling; a ``FORMAT x`` whose
    ``x`` is not a known format is left to the engine (it may be a column named ``format``).

    >>> s = parse_statement(b"INSERT INTO t (a) FORMAT CSV\\n1\\n2\\n")
    >>> s.sql, s.insert_format, bytes(s.data)
    ('INSERT INTO t (a) ', 'CSV', b'1\\n2\\n')
    >>> s = parse_statement(b"/* hi */ SELECT 'FORMAT x' FROM t FORMAT JSON;", {"json": "JSON"})
    >>> s.kind, s.output_format, s.sql
    ('SELECT', 'JSON', "/* hi */ SELECT 'FORMAT x' FROM t FORMAT JSON")
    """
    view = memoryview(data) if not isinstance(data, memoryview) else data
    tokens = _tokens(view)
    first: Token | None = None
    for tok in tokens:
        first = tok
        break
    if first is None:
        return Statement(sql="", kind="")
    kind = "(" if first.kind == "open" else first.upper if first.kind == "word" else ""
    if kind == "INSERT":
        return _parse_insert(view, tokens)

    depth = 0
    last_end = first.end
    output_format = None
    into_outfile = False
    multiple = False
    semicolon = False
    settings_after_format = False
    prev: Token = first
    depth = 1 if first.kind == "open" else 0
    for tok in tokens:
        if tok.kind == "semi":
            semicolon = True
            prev = tok
            continue
        if semicolon:
            multiple = True  # something other than ';' after a ';'
        if tok.kind == "open":
            depth += 1
        elif tok.kind == "close":
            depth = max(0, depth - 1)
        elif tok.kind == "word":
            if prev.kind == "word" and prev.upper == "INTO" and tok.upper == "OUTFILE":
                into_outfile = True
            if depth == 0 and prev.kind == "word" and prev.upper == "FORMAT" and formats:
                canonical = formats.get(tok.text.decode("latin-1").lower())
                if canonical:
                    output_format = canonical
            elif depth == 0 and output_format and tok.upper == "SETTINGS":
                settings_after_format = True
        last_end = tok.end
        prev = tok
    # Trailing ';' and comments are dropped, so a clause can be appended safely.
    return Statement(
        sql=_decode(view[:last_end]),
        kind=kind,
        output_format=output_format,
        into_outfile=into_outfile,
        multiple=multiple,
        settings_after_format=settings_after_format,
    )


def _parse_insert(view: memoryview, tokens: Iterator[Token]) -> Statement:
    depth = 0
    prev: Token | None = None
    for tok in tokens:
        if tok.kind == "open":
            depth += 1
        elif tok.kind == "close":
            depth = max(0, depth - 1)
        elif tok.kind == "word" and depth == 0:
            word = tok.upper
            if prev is not None and prev.kind == "word" and prev.upper == "FORMAT":
                start = _data_start(view, tok.end)
                return Statement(
                    sql=_decode(view[: prev.start]),
                    kind="INSERT",
                    insert_format=tok.text.decode("latin-1"),
                    data=view[start:],
                )
            if word in ("VALUES", "SELECT", "WITH"):
                # Inline VALUES and INSERT ... SELECT are plain SQL for the engine.
                break
        elif tok.kind == "semi":
            break
        prev = tok
    text = _decode(view).rstrip()
    while text.endswith(";"):
        text = text[:-1].rstrip()
    return Statement(sql=text, kind="INSERT")


def set_names(sql: str) -> list[str]:
    """Setting names assigned by ``SET a = 1, b = 'x'`` (top-level ``name =`` pairs).

    >>> set_names("SET max_threads = 1, `readonly` = 0")
    ['max_threads', 'readonly']
    """
    return re.findall(r"(?:\bSET\b|,)\s*`?([A-Za-z_][A-Za-z0-9_]*)`?\s*=", sql, re.I)


def quote_literal(value: str) -> str:
    """``value`` as a ClickHouse string literal.

    >>> print(quote_literal("it's"))
    'it\\'s'
    """
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def quote_ident(name: str) -> str:
    """``name`` as a backquoted ClickHouse identifier."""
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"
