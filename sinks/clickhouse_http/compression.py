"""HTTP compression of request bodies (bounded) and of responses.

Request bodies may come as ``Content-Encoding: gzip | deflate | zstd | lz4``, also as several
concatenated frames (clickhouse-connect sends one lz4/zstd frame per block). Decompression
stops at a limit, so a small body cannot expand into gigabytes (``Code: 229``, 413). A body
whose last frame is cut short is refused, never run.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable
from typing import Any

from .errors import ClickHouseError

__all__ = ["decompress", "response_encoder"]

# Compressed input is fed in slices: a decompressor's unused_data is a copy of the rest of its
# input, so handing it the whole body would copy it once per frame (dozens per insert).
_SLICE = 1 << 20


class _TooLarge(Exception):
    pass


def decompress(data: bytes, encoding: str, limit: int) -> bytes:
    """``data`` decoded per its ``Content-Encoding``, at most ``limit`` bytes of it.

    Raises :class:`ClickHouseError`: 229 beyond ``limit``, 354/561/618 for corrupt or truncated
    gzip/deflate, zstd and lz4 input, 48 for an encoding not spoken here.

    >>> decompress(gzip.compress(b"SELECT 1"), "gzip", 100)
    b'SELECT 1'
    """
    encoding = encoding.strip().lower()
    if encoding in ("", "identity", "none"):
        return data
    factory: Callable[[], Any]
    if encoding in ("gzip", "x-gzip", "deflate"):
        wbits = 16 + zlib.MAX_WBITS if encoding != "deflate" else zlib.MAX_WBITS
        factory, code = (lambda: _Zlib(wbits)), 354
    elif encoding == "zstd":
        from backports import zstd

        factory, code = zstd.ZstdDecompressor, 561
    elif encoding == "lz4":
        import lz4.frame

        factory, code = lz4.frame.LZ4FrameDecompressor, 618
    else:
        raise ClickHouseError(
            48, f"Unknown HTTP content encoding {encoding!r}: use gzip, deflate, zstd or lz4"
        )
    try:
        return _inflate(factory, data, limit, code)
    except _TooLarge:
        raise ClickHouseError(
            229, f"Decompressed request body is larger than the limit of {limit} bytes"
        ) from None
    except ClickHouseError:
        raise
    except Exception as exc:  # zlib.error, lz4's RuntimeError, zstd.ZstdError
        raise ClickHouseError(code, f"{encoding} decompression failed: {exc}") from exc


def _inflate(factory: Callable[[], Any], data: bytes, limit: int, code: int) -> bytes:
    """Decompress concatenated frames (gzip members, lz4 or zstd frames) up to ``limit`` bytes.

    ``factory`` makes a bz2-style decompressor (``decompress(data, max_length)``, ``eof``,
    ``needs_input``, ``unused_data``).
    """
    parts: list[bytes] = []
    size = 0
    view = memoryview(data)
    pos = 0
    d = factory()
    in_frame = False
    while pos < len(view):
        piece: bytes | memoryview = view[pos : pos + _SLICE]
        pos += len(piece)
        while True:
            in_frame = in_frame or len(piece) > 0
            # Bounded output per call: some decompressors allocate max_length up front.
            chunk = d.decompress(piece, max_length=min(limit + 1 - size, 8 * _SLICE))
            piece = b""
            size += len(chunk)
            parts.append(chunk)
            if size > limit:
                raise _TooLarge
            if d.eof:
                piece, d, in_frame = d.unused_data, factory(), False
                if piece:
                    continue
                break
            if d.needs_input:
                break  # the next slice
            # else: max_length reached with input left inside the decompressor: drain it
    if in_frame:
        raise ClickHouseError(code, "unexpected end of compressed data")
    return b"".join(parts)


class _Zlib:
    """zlib's decompressobj behind the bz2-style interface _inflate expects."""

    def __init__(self, wbits: int) -> None:
        self._d = zlib.decompressobj(wbits)
        self._tail = b""

    def decompress(self, data: bytes | memoryview, max_length: int) -> bytes:
        out = self._d.decompress(self._tail + bytes(data), max_length)
        self._tail = self._d.unconsumed_tail
        return out

    @property
    def eof(self) -> bool:
        return self._d.eof

    @property
    def needs_input(self) -> bool:
        return not self._tail

    @property
    def unused_data(self) -> bytes:
        return self._d.unused_data


def response_encoder(accept_encoding: str) -> tuple[str, Callable[[bytes], bytes]] | None:
    """The response's ``Content-Encoding`` and encoder: the client's first listed one that we
    speak, or ``None``.

    >>> response_encoder("br, zstd;q=0.9, gzip")[0]
    'zstd'
    """
    for item in accept_encoding.split(","):
        name = item.split(";")[0].strip().lower()
        if name in ("gzip", "x-gzip"):
            return "gzip", lambda b: gzip.compress(b, compresslevel=3)
        if name == "deflate":
            return "deflate", lambda b: zlib.compress(b, 3)
        if name == "zstd":
            from backports import zstd

            return "zstd", zstd.compress
        if name == "lz4":
            import lz4.frame

            return "lz4", lz4.frame.compress
    return None
