"""ClickHouse's errors as its HTTP interface reports them: code, name, status and body.

Every error the endpoint answers with, its own or the engine's, leaves as
``Code: 62. DB::Exception: <message>. (SYNTAX_ERROR) (version 26.9...)`` with the code in the
``X-ClickHouse-Exception-Code`` header, so clients (clickhouse-connect raises
``DatabaseError(code=...)``) see what a ClickHouse server would have said.
"""

from __future__ import annotations

import re

__all__ = ["ClickHouseError", "is_engine_error"]

# ClickHouse error codes used here (errorCodeToName in the engine).
_CODES = {
    "UNSUPPORTED_METHOD": 1, "CANNOT_PARSE_TEXT": 6, "THERE_IS_NO_COLUMN": 8,
    "DUPLICATE_COLUMN": 15, "CANNOT_PARSE_ESCAPE_SEQUENCE": 25, "CANNOT_PARSE_QUOTED_STRING": 26,
    "CANNOT_PARSE_INPUT_ASSERTION_FAILED": 27, "BAD_ARGUMENTS": 36, "UNKNOWN_ELEMENT_IN_AST": 37,
    "CANNOT_PARSE_DATE": 38, "CANNOT_PARSE_DATETIME": 41, "ILLEGAL_COLUMN": 44,
    "UNKNOWN_FUNCTION": 46, "UNKNOWN_IDENTIFIER": 47, "NOT_IMPLEMENTED": 48, "UNKNOWN_TYPE": 50,
    "TYPE_MISMATCH": 53, "UNKNOWN_STORAGE": 56, "UNKNOWN_TABLE": 60, "SYNTAX_ERROR": 62,
    "UNKNOWN_AGGREGATE_FUNCTION": 63, "CANNOT_PARSE_NUMBER": 72, "UNKNOWN_FORMAT": 73,
    "CANNOT_OPEN_FILE": 76, "UNKNOWN_TYPE_OF_QUERY": 78, "UNKNOWN_DATABASE": 81,
    "UNKNOWN_SETTING": 115, "INCORRECT_DATA": 117, "UNKNOWN_TYPE_OF_AST_NODE": 123,
    "UNKNOWN_DIRECTION_OF_SORTING": 152, "TIMEOUT_EXCEEDED": 159, "READONLY": 164,
    "TOO_DEEP_AST": 167, "TOO_BIG_AST": 168, "UNKNOWN_USER": 192, "WRONG_PASSWORD": 193,
    "REQUIRED_PASSWORD": 194, "SOCKET_TIMEOUT": 209, "UNEXPECTED_AST_STRUCTURE": 223,
    "QUERY_IS_TOO_LARGE": 229, "CANNOT_DECOMPRESS": 271, "VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE": 321,
    "UNKNOWN_DATABASE_ENGINE": 336, "ZLIB_INFLATE_FAILED": 354, "SESSION_NOT_FOUND": 372,
    "SESSION_IS_LOCKED": 373, "CANNOT_PARSE_UUID": 376, "HTTP_LENGTH_REQUIRED": 381,
    "CANNOT_COMPILE_REGEXP": 427, "CANNOT_SCHEDULE_TASK": 439,
    "CANNOT_PARSE_DOMAIN_VALUE_FROM_STRING": 441, "ACCESS_DENIED": 497, "UNKNOWN_ROLE": 511,
    "SET_NON_GRANTED_ROLE": 512, "AUTHENTICATION_FAILED": 516, "ZSTD_DECODER_FAILED": 561,
    "LZ4_DECODER_FAILED": 618, "CANNOT_PARSE_IPV4": 675, "CANNOT_PARSE_IPV6": 676,
    "STD_EXCEPTION": 1001,
}  # fmt: skip
_CODE_NAMES = {code: name for name, code in _CODES.items()}

# HTTP status per error, after ClickHouse's exceptionCodeToHTTPStatus; anything else is 500.
_STATUS_BY_NAME = {
    401: "REQUIRED_PASSWORD UNKNOWN_USER WRONG_PASSWORD AUTHENTICATION_FAILED SET_NON_GRANTED_ROLE",
    # READONLY is not in ClickHouse's table (it answers 500); 403 says what happened, and the
    # code header is 164 either way.
    403: "ACCESS_DENIED READONLY",
    400: "BAD_ARGUMENTS CANNOT_COMPILE_REGEXP CANNOT_PARSE_TEXT CANNOT_PARSE_ESCAPE_SEQUENCE "
    "CANNOT_PARSE_QUOTED_STRING CANNOT_PARSE_DATE CANNOT_PARSE_DATETIME CANNOT_PARSE_NUMBER "
    "CANNOT_PARSE_DOMAIN_VALUE_FROM_STRING CANNOT_PARSE_IPV4 CANNOT_PARSE_IPV6 "
    "CANNOT_PARSE_INPUT_ASSERTION_FAILED CANNOT_PARSE_UUID DUPLICATE_COLUMN ILLEGAL_COLUMN "
    "UNKNOWN_ELEMENT_IN_AST UNKNOWN_TYPE_OF_AST_NODE THERE_IS_NO_COLUMN TOO_DEEP_AST TOO_BIG_AST "
    "UNEXPECTED_AST_STRUCTURE SYNTAX_ERROR INCORRECT_DATA TYPE_MISMATCH "
    "VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE "
    # corrupt compressed request bodies are the client's fault too (ClickHouse answers 500)
    "ZLIB_INFLATE_FAILED ZSTD_DECODER_FAILED LZ4_DECODER_FAILED CANNOT_DECOMPRESS",
    404: "UNKNOWN_TABLE UNKNOWN_FUNCTION UNKNOWN_IDENTIFIER UNKNOWN_TYPE UNKNOWN_STORAGE "
    "UNKNOWN_DATABASE UNKNOWN_SETTING UNKNOWN_DIRECTION_OF_SORTING UNKNOWN_AGGREGATE_FUNCTION "
    "UNKNOWN_FORMAT UNKNOWN_DATABASE_ENGINE UNKNOWN_TYPE_OF_QUERY UNKNOWN_ROLE",
    413: "QUERY_IS_TOO_LARGE",
    501: "NOT_IMPLEMENTED",
    503: "SOCKET_TIMEOUT CANNOT_OPEN_FILE CANNOT_SCHEDULE_TASK",
    411: "HTTP_LENGTH_REQUIRED",
    408: "TIMEOUT_EXCEEDED",
}
_STATUS_BY_CODE = {
    _CODES[name]: status for status, names in _STATUS_BY_NAME.items() for name in names.split()
}

_CODE_RE = re.compile(r"Code:\s*(\d+)\.\s*(?:DB::Exception:\s*)?")
_NAME_RE = re.compile(r"\(([A-Z][A-Z0-9_]+)\)")
_VERSION_RE = re.compile(r"\s*\(version [^()]*\)\.?")
_TRAILING_NAME_RE = re.compile(r"\.?\s*\([A-Z][A-Z0-9_]+\)\.?\s*$")


class ClickHouseError(Exception):
    """An error as ClickHouse reports it over HTTP: code, name, message and status.

    >>> err = ClickHouseError(62, "Empty query")
    >>> err.status, err.body("26.9").decode()
    (400, 'Code: 62. DB::Exception: Empty query. (SYNTAX_ERROR) (version 26.9)\\n')
    """

    def __init__(self, code: int, message: str, name: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.name = name or _CODE_NAMES.get(code, "UNKNOWN_EXCEPTION")
        self.message = message

    @property
    def status(self) -> int:
        return _STATUS_BY_CODE.get(self.code, 500)

    def body(self, version: str) -> bytes:
        return f"Code: {self.code}. DB::Exception: {self.message}. ({self.name}) (version {version})\n".encode()

    @classmethod
    def from_engine(cls, exc: BaseException) -> ClickHouseError:
        """Rebuild the engine's error: chdb nests ``Code: N. DB::Exception:`` prefixes and
        version trailers when an error crosses its layers; the client wants one of each.

        >>> e = ClickHouseError.from_engine(RuntimeError(
        ...     "Code: 60. DB::Exception: Code: 60. DB::Exception: Unknown table t. "
        ...     "(UNKNOWN_TABLE) (version 26.9.1). (UNKNOWN_TABLE)"))
        >>> e.code, e.name, e.message
        (60, 'UNKNOWN_TABLE', 'Unknown table t')
        """
        text = str(exc)
        match = _CODE_RE.search(text)
        code = int(match.group(1)) if match else 1001
        names = _NAME_RE.findall(text)
        name = names[-1] if names else None
        text = _VERSION_RE.sub("", text)
        if match:
            text = text[match.start() :]
        while _CODE_RE.match(text):
            text = _CODE_RE.sub("", text, count=1)
        text = text.strip()
        # Drop trailing "(NAME)" markers (repeated by nesting) and the final period.
        while (shorter := _TRAILING_NAME_RE.sub("", text)) != text:
            text = shorter
        return cls(code, text.rstrip(". ") or "unknown error", name)


def is_engine_error(exc: BaseException) -> bool:
    """Whether ``exc`` is the engine refusing a statement (it carries a ClickHouse code)."""
    return _CODE_RE.search(str(exc)) is not None
