"""The ClickHouse HTTP interface over the embedded store, spoken to by real clients.

One real chdb store for the module (chdb binds one data path per process; it is closed at the
end so later modules can open theirs), one endpoint on a free port, real HTTP: the unmodified
clickhouse-connect client, httpx for curl-style requests, and driftline's own ServerStore.
Each test works in a database of its own.
"""

from __future__ import annotations

import base64
import gzip
import io
import itertools
import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import clickhouse_connect
import httpx
import lz4.frame
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from backports import zstd
from clickhouse_connect.driver.exceptions import DatabaseError
from driftline.sinks import EmbeddedStore, StoreError, open_store
from driftline.sinks.clickhouse_http import ServerHandle, serve_store
from driftline.sinks.http_sql import parse_statement

from .conftest import make_predictions, now_ms

USERS = {"rw": ("rw-secret", False), "ro": ("ro-secret", True)}
RW = ("rw", "rw-secret")
RO = ("ro", "ro-secret")
_names = itertools.count()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedStore]:
    s = EmbeddedStore(tmp_path_factory.mktemp("chdb-http"), "driftline_http")
    try:
        yield s
    finally:
        s.close()


@pytest.fixture(scope="module")
def server(store: EmbeddedStore) -> Iterator[ServerHandle]:
    handle = serve_store(store, "127.0.0.1", 0, USERS)
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture
def db(store: EmbeddedStore) -> Iterator[str]:
    name = f"http_{next(_names)}"
    store.command(f"CREATE DATABASE {name}")
    try:
        yield name
    finally:
        store.command(f"DROP DATABASE IF EXISTS {name}")


@pytest.fixture
def http(server: ServerHandle) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, auth=RW, timeout=60) as client:
        yield client


def client_for(server: ServerHandle, db: str, user: tuple[str, str] = RW, **kw):
    return clickhouse_connect.get_client(
        host="127.0.0.1", port=server.port, username=user[0], password=user[1], database=db, **kw
    )


def assert_ch_error(response: httpx.Response, code: int, status: int) -> None:
    assert response.status_code == status, response.text
    assert response.headers["X-ClickHouse-Exception-Code"] == str(code)
    assert re.match(rf"Code: {code}\. DB::Exception: .+\([A-Z0-9_]+\)", response.text), (
        response.text
    )


def still_serving(http: httpx.Client) -> None:
    assert http.get("/ping").text == "Ok.\n"
    assert http.post("/", content="SELECT 40 + 2").text == "42\n"


# -- statement splitting (pure) -----------------------------------------------------------


def test_statement_parsing_finds_clauses_outside_strings_comments_and_parens() -> None:
    formats = {"json": "JSON", "native": "Native", "csv": "CSV"}
    s = parse_statement(
        b"-- lead\n/* c */ WITH 1 AS f SELECT 'FORMAT CSV' AS format, f FORMAT JSON;\n", formats
    )
    assert (s.kind, s.output_format, s.multiple) == ("WITH", "JSON", False)
    assert s.sql.endswith("FORMAT JSON")  # the trailing ';' is dropped
    assert parse_statement(b"SELECT format FROM t", formats).output_format is None
    assert parse_statement(b"SELECT 1; DROP TABLE t", formats).multiple
    assert parse_statement(b"SELECT 1 INTO OUTFILE 'x'", formats).into_outfile
    assert parse_statement(b"(SELECT 1) UNION ALL (SELECT 2)", formats).kind == "("

    binary = b"\x02\x01FORMAT\x00'\xff;\n"
    s = parse_statement(
        b"INSERT INTO t (`format`, b) SETTINGS x = 'FORMAT' FORMAT Native\n" + binary
    )
    assert (s.kind, s.insert_format, bytes(s.data)) == ("INSERT", "Native", binary)
    assert s.sql == "INSERT INTO t (`format`, b) SETTINGS x = 'FORMAT' "
    s = parse_statement(b"INSERT INTO t VALUES (1, 'FORMAT CSV');")
    assert (s.insert_format, s.data, s.sql) == (
        None,
        None,
        "INSERT INTO t VALUES (1, 'FORMAT CSV')",
    )


# -- curl-style requests --------------------------------------------------------------------


def test_ping_root_and_unknown_paths(http: httpx.Client) -> None:
    assert http.get("/ping").text == "Ok.\n"
    assert httpx.get(str(http.base_url)).text == "Ok.\n"  # no credentials needed for these
    assert http.get("/play").status_code == 404


def test_get_and_post_with_headers(http: httpx.Client, server: ServerHandle, db: str) -> None:
    r = http.get("/", params={"query": "SELECT 1 AS x, 'a' AS s FORMAT JSONEachRow"})
    assert r.status_code == 200 and r.json() == {"x": 1, "s": "a"}
    assert r.headers["X-ClickHouse-Format"] == "JSONEachRow"
    assert r.headers["X-ClickHouse-Timezone"]
    assert r.headers["X-ClickHouse-Server-Display-Name"]
    assert json.loads(r.headers["X-ClickHouse-Summary"])["result_rows"] == "1"

    r = http.post(
        "/", params={"query_id": "q-1", "database": db}, content="SELECT currentDatabase()"
    )
    assert r.text == f"{db}\n" and r.headers["X-ClickHouse-Query-Id"] == "q-1"
    assert r.headers["X-ClickHouse-Format"] == "TabSeparated"
    # the query parameter and the body are one statement, as in ClickHouse
    r = http.post(
        "/", params={"query": "SELECT number FROM numbers(3)"}, content="WHERE number > 0"
    )
    assert r.text == "1\n2\n"
    r = http.post(
        "/", params={"default_format": "CSV", "param_n": "4"}, content="SELECT {n:UInt8} * 2, 'x'"
    )
    assert r.text == '8,"x"\n' and r.headers["X-ClickHouse-Format"] == "CSV"


def test_text_formats(http: httpx.Client, db: str) -> None:
    http.post(
        "/",
        params={"database": db},
        content="CREATE TABLE t (a UInt8, s String) ENGINE = MergeTree ORDER BY a",
    )
    http.post("/", params={"database": db}, content="INSERT INTO t VALUES (1, 'x'), (2, 'y\tz')")

    def get(fmt: str) -> str:
        r = http.post(
            "/", params={"database": db}, content=f"SELECT * FROM t ORDER BY a FORMAT {fmt}"
        )
        assert r.status_code == 200, r.text
        return r.text

    assert get("TSV") == "1\tx\n2\ty\\tz\n"
    assert get("TSVWithNames") == "a\ts\n1\tx\n2\ty\\tz\n"
    assert get("CSVWithNames") == '"a","s"\n1,"x"\n2,"y\tz"\n'
    assert [json.loads(line) for line in get("JSONEachRow").splitlines()] == [
        {"a": 1, "s": "x"},
        {"a": 2, "s": "y\tz"},
    ]
    assert json.loads(get("JSON"))["data"][1] == {"a": 2, "s": "y\tz"}
    assert json.loads(get("JSONCompact"))["data"] == [[1, "x"], [2, "y\tz"]]


def test_binary_formats_round_trip(http: httpx.Client, server: ServerHandle, db: str) -> None:
    ddl = "CREATE TABLE {} (a UInt32, s LowCardinality(String), m Map(String, Float64)) ENGINE = MergeTree ORDER BY a"
    for table in ("src", "copy_native", "copy_rb"):
        http.post("/", params={"database": db}, content=ddl.format(table))
    http.post(
        "/",
        params={"database": db},
        content="INSERT INTO src SELECT number, toString(number % 3), map('k', number / 2) FROM numbers(1000)",
    )
    select = "SELECT * FROM src ORDER BY a FORMAT {}"

    native = http.post("/", params={"database": db}, content=select.format("Native")).content
    assert native[:2] == b"\x03\xe8"  # 3 columns, 1000 rows (varints): ClickHouse's block header
    r = http.post(
        "/",
        params={"database": db, "query": "INSERT INTO copy_native FORMAT Native"},
        content=native,
    )
    assert r.status_code == 200, r.text
    rb = http.post(
        "/", params={"database": db}, content=select.format("RowBinaryWithNamesAndTypes")
    ).content
    http.post(
        "/",
        params={"database": db, "query": "INSERT INTO copy_rb FORMAT RowBinaryWithNamesAndTypes"},
        content=rb,
    )

    client = client_for(server, db)
    expected = client.query("SELECT * FROM src ORDER BY a").result_rows
    assert len(expected) == 1000 and expected[3] == (3, "0", {"k": 1.5})
    assert client.query("SELECT * FROM copy_native ORDER BY a").result_rows == expected
    assert client.query("SELECT * FROM copy_rb ORDER BY a").result_rows == expected

    arrow = pa.ipc.open_file(
        io.BytesIO(http.post("/", params={"database": db}, content=select.format("Arrow")).content)
    ).read_all()
    stream = pa.ipc.open_stream(
        http.post("/", params={"database": db}, content=select.format("ArrowStream")).content
    ).read_all()
    parquet = pq.read_table(
        io.BytesIO(
            http.post("/", params={"database": db}, content=select.format("Parquet")).content
        )
    )
    for table in (arrow, stream, parquet):
        assert table.num_rows == 1000 and table.column("a").to_pylist()[:3] == [0, 1, 2]


def test_compressed_request_bodies_and_responses(http: httpx.Client, db: str) -> None:
    http.post(
        "/",
        params={"database": db},
        content="CREATE TABLE t (a UInt32) ENGINE = MergeTree ORDER BY a",
    )
    csv = "".join(f"{i}\n" for i in range(100)).encode()
    bodies = {
        "gzip": gzip.compress(csv),
        "zstd": zstd.compress(csv[:150]) + zstd.compress(csv[150:]),  # one frame per block
        "lz4": lz4.frame.compress(csv[:100]) + lz4.frame.compress(csv[100:]),
    }
    for encoding, body in bodies.items():
        r = http.post(
            "/",
            params={"database": db, "query": "INSERT INTO t FORMAT CSV"},
            content=body,
            headers={"Content-Encoding": encoding},
        )
        assert r.status_code == 200, (encoding, r.text)
        assert json.loads(r.headers["X-ClickHouse-Summary"])["written_rows"] == "100"
    r = http.post("/", params={"database": db}, content="SELECT count(), sum(a) FROM t")
    assert r.text == f"300\t{3 * sum(range(100))}\n"

    decoders = {"zstd": zstd.decompress, "lz4": lz4.frame.decompress}
    for encoding in ("gzip", "deflate", "zstd", "lz4"):
        r = http.post(
            "/",
            params={"database": db, "enable_http_compression": "1"},
            content="SELECT a FROM t ORDER BY a LIMIT 5",
            headers={"Accept-Encoding": encoding},
        )
        assert r.headers["Content-Encoding"] == encoding
        # httpx decodes gzip and deflate itself
        body = decoders[encoding](r.content) if encoding in decoders else r.content
        assert body == b"0\n0\n0\n1\n1\n"
    r = http.post(
        "/", params={"database": db}, content="SELECT 1", headers={"Accept-Encoding": "gzip"}
    )
    assert "Content-Encoding" not in r.headers  # only with enable_http_compression=1


# -- clickhouse-connect, unmodified ---------------------------------------------------------


@pytest.mark.parametrize("compress", [True, "gzip", "zstd", False])
def test_clickhouse_connect_round_trip(server: ServerHandle, db: str, compress) -> None:
    client = client_for(server, db, compress=compress)
    assert client.ping() and client.server_version
    client.command(
        "CREATE TABLE t (id UInt32, name LowCardinality(String), score Float64, "
        "tags Map(String, String), at DateTime64(3, 'UTC')) ENGINE = MergeTree ORDER BY id"
    )
    at = pd.Timestamp("2026-01-02 03:04:05.678", tz="UTC")
    rows = [[i, f"n{i % 4}", i / 4, {"k": str(i)}, at.to_pydatetime()] for i in range(500)]
    client.insert("t", rows, column_names=["id", "name", "score", "tags", "at"])
    df = pd.DataFrame(
        {"id": range(500, 600), "name": "df", "score": 0.5, "tags": [{}] * 100, "at": at}
    )
    client.insert_df("t", df)

    assert client.query("SELECT count(), sum(id) FROM t").result_rows == [(600, sum(range(600)))]
    first = client.query("SELECT * FROM t WHERE id = {i:UInt32}", parameters={"i": 7}).result_rows
    assert first[0][:4] == (7, "n3", 1.75, {"k": "7"})
    out = client.query_df("SELECT id, name, at FROM t WHERE name = 'df' ORDER BY id")
    assert list(out["id"]) == list(range(500, 600)) and out["at"].iloc[0] == at.tz_localize(None)
    table = client.query_arrow("SELECT id, score FROM t ORDER BY id")
    assert table.num_rows == 600 and table.column("score").to_pylist()[4] == 1.0

    with client.query_row_block_stream("SELECT number FROM numbers(100000)") as stream:
        total = sum(len(block) for block in stream)
    assert total == 100000
    assert client.command("SELECT 'one'") == "one"
    assert client.command("EXISTS TABLE t") == 1


def test_clickhouse_connect_errors_and_server_side_settings(server: ServerHandle, db: str) -> None:
    client = client_for(server, db)
    with pytest.raises(DatabaseError) as err:
        client.query("SELECT * FROM no_such_table")
    assert err.value.code == 60
    with pytest.raises(DatabaseError) as err:
        client.command("SELEC 1")
    assert err.value.code == 62
    # settings travel as URL parameters and apply to that query only
    got = client.query("SELECT getSetting('max_threads')", settings={"max_threads": 1}).result_rows
    assert str(got[0][0]) == "1"
    assert client.query("SELECT getSetting('max_threads')").result_rows[0][0] != 1
    with pytest.raises(DatabaseError) as err:
        client.query("SELECT 1", settings={"no_such_setting": 1})
    assert err.value.code == 115
    # queries are bounded by the server's max_execution_time unless they set their own
    assert client.command("SELECT getSetting('max_execution_time')") == 60
    got = client.command(
        "SELECT getSetting('max_execution_time')", settings={"max_execution_time": 5}
    )
    assert got == 5
    # the query's own SETTINGS win over URL settings, as in ClickHouse; both forms parse
    for sql in (
        "SELECT getSetting('max_threads') SETTINGS max_threads = 3",
        "SELECT getSetting('max_threads') AS t FORMAT TabSeparated SETTINGS max_threads = 3",
    ):
        assert client.raw_query(sql, settings={"max_threads": 1}) == b"3\n"
    ro = client_for(server, db, RO)
    with pytest.raises(DatabaseError) as err:
        ro.raw_query("SELECT 1 FORMAT TabSeparated SETTINGS max_threads = 3")
    assert err.value.code == 164


def test_sessions_keep_set_and_use(server: ServerHandle, store: EmbeddedStore, db: str) -> None:
    client = client_for(server, db)  # clickhouse-connect opens a session per client
    client.command("SET max_threads = 1")
    client.command(f"USE {db}")
    assert str(client.command("SELECT getSetting('max_threads')")) == "1"
    other = client_for(server, db)
    assert str(other.command("SELECT getSetting('max_threads')")) != "1"
    # ... and the store's own connection is as it was: database and settings
    assert store.query("SELECT currentDatabase(), getSetting('max_threads') = 1") == [
        (store.database, 0)
    ]
    http = httpx.Client(base_url=server.url, auth=RW)
    r = http.post("/", params={"session_id": "nope", "session_check": "1"}, content="SELECT 1")
    assert_ch_error(r, 372, 500)


def test_requests_interleave_with_the_owner_without_leaking_state(
    server: ServerHandle, store: EmbeddedStore, db: str
) -> None:
    """HTTP requests switch database and settings on the store's one connection; the owner (the
    worker) must see its own database and settings between any two of them."""
    import threading

    errors: list[BaseException] = []

    def hammer() -> None:
        try:
            with httpx.Client(base_url=server.url, auth=RW) as c:
                for i in range(15):
                    r = c.post(
                        "/",
                        params={"database": db, "max_threads": "1", "optimize_on_insert": "0"},
                        content=f"CREATE TABLE IF NOT EXISTS t{i % 3} (a UInt8) ENGINE = Memory",
                    )
                    assert r.status_code == 200, r.text
                    r = c.post("/", params={"database": db, "max_threads": "1"}, content="SELECT 1")
                    assert r.text == "1\n"
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for t in threads:
        t.start()
    seen = set()
    while any(t.is_alive() for t in threads):
        seen.update(
            store.query(
                "SELECT currentDatabase(), getSetting('max_threads'), getSetting('optimize_on_insert')"
            )
        )
    for t in threads:
        t.join()
    assert not errors, errors
    home = store.query(
        "SELECT currentDatabase(), getSetting('max_threads'), getSetting('optimize_on_insert')"
    )
    assert seen <= set(home) and home[0][0] == store.database


# -- users ----------------------------------------------------------------------------------


def test_authentication(server: ServerHandle) -> None:
    url = server.url
    assert httpx.post(url, content="SELECT 1", auth=("rw", "wrong")).status_code == 401
    assert_ch_error(httpx.post(url, content="SELECT 1", auth=("nobody", "")), 516, 401)
    assert_ch_error(httpx.post(url, content="SELECT 1"), 516, 401)  # no "default" user here
    headers = {"X-ClickHouse-User": "ro", "X-ClickHouse-Key": "ro-secret"}
    assert httpx.post(url, content="SELECT 1", headers=headers).text == "1\n"
    params = {"user": "rw", "password": "rw-secret", "query": "SELECT 2"}
    assert httpx.get(url, params=params).text == "2\n"


def test_readonly_user(server: ServerHandle, http: httpx.Client, db: str) -> None:
    http.post(
        "/",
        params={"database": db},
        content="CREATE TABLE t (a UInt8) ENGINE = MergeTree ORDER BY a",
    )
    http.post("/", params={"database": db}, content="INSERT INTO t VALUES (1)")
    ro = client_for(server, db, RO)
    assert ro.query("SELECT count() FROM t").result_rows == [(1,)]
    assert ro.query_df("SELECT a FROM t")["a"].tolist() == [1]
    for statement in (
        "INSERT INTO t VALUES (2)",
        "CREATE TABLE u (a UInt8) ENGINE = Memory",
        "SET max_threads = 1",
        "  /* sneaky */ -- comment\n DROP TABLE t",
        "WITH 1 AS x INSERT INTO t SELECT x",
        "SELECT * FROM file('/etc/hostname', 'LineAsString')",  # the engine's second guard
        "SELECT 1 SETTINGS max_threads = 1",
        "SELECT 1 SETTINGS readonly = 0",
    ):
        with pytest.raises(DatabaseError) as err:
            ro.command(statement)
        assert err.value.code == 164, statement
    r = httpx.post(
        server.url, params={"database": db, "max_threads": "1"}, content="SELECT 1", auth=RO
    )
    assert_ch_error(r, 164, 403)
    r = httpx.post(
        server.url,
        params={"query": "INSERT INTO t FORMAT CSV", "database": db},
        content="3\n",
        auth=RO,
    )
    assert_ch_error(r, 164, 403)
    # GET implies readonly for everyone, as in ClickHouse
    r = http.get("/", params={"database": db, "query": "INSERT INTO t VALUES (4)"})
    assert_ch_error(r, 164, 403)
    assert "method GET implies readonly" in r.text
    assert http.post("/", params={"database": db}, content="SELECT count() FROM t").text == "1\n"


# -- bad input ------------------------------------------------------------------------------


def test_bad_requests_get_clickhouse_errors_and_the_server_carries_on(
    http: httpx.Client, store: EmbeddedStore, db: str
) -> None:
    assert_ch_error(http.post("/", content="SELEC 1"), 62, 400)
    still_serving(http)
    assert_ch_error(
        http.post("/", params={"database": db}, content="SELECT * FROM missing"), 60, 404
    )
    assert_ch_error(http.post("/", params={"database": "no_db"}, content="SELECT 1"), 81, 404)
    assert_ch_error(http.post("/", content="SELECT 1; SELECT 2"), 62, 400)
    assert_ch_error(http.post("/", content="SELECT 1 INTO OUTFILE '/tmp/x'"), 48, 501)
    assert_ch_error(http.post("/", content=""), 62, 400)
    assert_ch_error(http.post("/", content="SELECT 1 FORMAT DataFrame"), 73, 404)
    assert_ch_error(http.post("/", content="SET ROLE admin"), 48, 501)
    broken = gzip.compress(b"SELECT 1")[:-6]
    assert_ch_error(http.post("/", content=broken, headers={"Content-Encoding": "gzip"}), 354, 400)
    assert_ch_error(
        http.post("/", content=b"garbage", headers={"Content-Encoding": "zstd"}), 561, 400
    )
    assert_ch_error(
        http.post("/", content=b"garbage", headers={"Content-Encoding": "lz4"}), 618, 400
    )
    assert_ch_error(http.post("/", content=b"x", headers={"Content-Encoding": "snappy"}), 48, 501)
    assert_ch_error(http.post("/", params={"compress": "1"}, content="SELECT 1"), 48, 501)
    http.post(
        "/",
        params={"database": db},
        content="CREATE TABLE t (a UInt8) ENGINE = MergeTree ORDER BY a",
    )
    r = http.post(
        "/",
        params={"database": db, "query": "INSERT INTO t FORMAT CSV"},
        content="1\nnot a number\n",
    )
    assert r.status_code == 400  # a parse error of the data (the code depends on the format)
    assert r.headers["X-ClickHouse-Exception-Code"] in ("6", "27", "72", "117"), r.text
    assert http.post("/", params={"database": db}, content="SELECT count() FROM t").text == "0\n"
    still_serving(http)
    # the store's connection was put back after every failed request too
    assert store.query("SELECT currentDatabase()") == [(store.database,)]


def test_a_body_cut_short_is_not_inserted(
    server: ServerHandle, http: httpx.Client, db: str
) -> None:
    http.post(
        "/",
        params={"database": db},
        content="CREATE TABLE t (a UInt8) ENGINE = MergeTree ORDER BY a",
    )
    auth = base64.b64encode(b"rw:rw-secret").decode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(
            f"POST /?database={db}&query=INSERT%20INTO%20t%20FORMAT%20CSV HTTP/1.1\r\n"
            f"Host: x\r\nAuthorization: Basic {auth}\r\nContent-Length: 1000\r\n\r\n1\n2\n".encode()
        )
        sock.shutdown(socket.SHUT_WR)  # the client dies after 4 of 1000 bytes
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 400")
    assert http.post("/", params={"database": db}, content="SELECT count() FROM t").text == "0\n"


def test_a_chunked_body_without_its_last_chunk_is_not_inserted(
    server: ServerHandle, http: httpx.Client, db: str
) -> None:
    http.post("/", params={"database": db}, content="CREATE TABLE t (a UInt8) ENGINE = Memory")
    auth = base64.b64encode(b"rw:rw-secret").decode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(
            f"POST /?database={db}&query=INSERT%20INTO%20t%20FORMAT%20CSV HTTP/1.1\r\n"
            f"Host: x\r\nAuthorization: Basic {auth}\r\nTransfer-Encoding: chunked\r\n\r\n"
            "4\r\n1\n2\n\r\n".encode()
        )
        sock.shutdown(socket.SHUT_WR)  # no terminating 0-size chunk
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 400")
    assert http.post("/", params={"database": db}, content="SELECT count() FROM t").text == "0\n"


def test_an_oversized_body_is_refused_before_it_is_sent(store: EmbeddedStore) -> None:
    """With Expect: 100-continue the 413 comes instead of the go-ahead."""
    small = serve_store(store, "127.0.0.1", 0, USERS, max_body_bytes=1024)
    try:
        with socket.create_connection(("127.0.0.1", small.port), timeout=30) as sock:
            sock.sendall(
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n"
                b"Expect: 100-continue\r\n\r\n"
            )
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 413") and b"Code: 229." in reply
    finally:
        small.stop()


def test_methods(http: httpx.Client) -> None:
    assert http.head("/ping").status_code == 200
    assert_ch_error(http.put("/", content="SELECT 1"), 48, 501)
    still_serving(http)


def test_oversized_bodies_get_413(store: EmbeddedStore) -> None:
    small = serve_store(store, "127.0.0.1", 0, USERS, max_body_bytes=1024)
    try:
        with httpx.Client(base_url=small.url, auth=RW) as http:
            r = http.post("/", content=b"SELECT '" + b"x" * 4096 + b"'")
            assert_ch_error(r, 229, 413)

            def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer encoding
                yield b"SELECT '"
                for _ in range(8):
                    yield b"y" * 512
                yield b"'"

            assert_ch_error(http.post("/", content=chunks()), 229, 413)
            # a small body that decompresses beyond the limit is refused the same way
            bomb = gzip.compress(b"SELECT '" + b"z" * 100_000 + b"'")
            r = http.post("/", content=bomb, headers={"Content-Encoding": "gzip"})
            assert_ch_error(r, 229, 413)
            still_serving(http)
    finally:
        small.stop()


# -- driftline's ServerStore, for real over HTTP ---------------------------------------------


def test_server_store_against_the_endpoint(server: ServerHandle, store: EmbeddedStore) -> None:
    database = f"driftline_test_{next(_names)}"
    url = f"http://rw:rw-secret@127.0.0.1:{server.port}"
    remote = open_store(url, database, Path("/nonexistent"))
    try:
        assert "ServerStore" in repr(remote)
        applied = remote.migrate()
        assert applied and remote.applied_migrations() == applied
        assert remote.migrate() == []
        # the same DDL as the embedded store: same tables, same column types
        ours = store.query(
            "SELECT table, name, type FROM system.columns WHERE database = {d:String} ORDER BY table, position",
            {"d": database},
        )
        assert len(ours) > 20

        rows = make_predictions(200, seed=3)
        assert remote.insert_rows("predictions", rows, dedup_token="batch-1") == 200
        assert remote.insert_rows("predictions", rows, dedup_token="batch-1") == 200  # dropped
        assert remote.query("SELECT count() FROM predictions") == [(200,)]
        remote.insert_rows("predictions", rows[:50])  # a replay without token: FINAL dedups
        assert remote.query("SELECT count() FROM predictions FINAL") == [(200,)]
        got = remote.query(
            "SELECT event_id, numeric_features['f0'], segments, event_time FROM predictions FINAL "
            "WHERE event_id = {id:String}",
            {"id": rows[7]["event_id"]},
        )
        assert got[0][0] == rows[7]["event_id"]
        assert got[0][1] == pytest.approx(rows[7]["numeric_features"]["f0"])
        assert got[0][2] == rows[7]["segments"]
        assert int(got[0][3].timestamp() * 1000) == rows[7]["event_time"]
        df = remote.query_df(
            "SELECT model_id, count() AS n FROM predictions FINAL GROUP BY model_id"
        )
        assert df.to_dict("records") == [{"model_id": "m1", "n": 200}]
        remote.insert_rows(
            "outcomes",
            [
                {
                    "event_id": "o1",
                    "prediction_id": rows[0]["event_id"],
                    "model_id": "m1",
                    "event_time": now_ms(),
                }
            ],
        )
        assert remote.query("SELECT event_id FROM outcomes") == [("o1",)]
        with pytest.raises(StoreError):
            remote.query("SELECT * FROM no_such_table")
    finally:
        remote.command(f"DROP DATABASE IF EXISTS {database}")
        remote.close()


# -- the CLI command, in a process of its own ------------------------------------------------

_CLI = """
import argparse, sys, types
from pathlib import Path
from driftline.sinks.clickhouse_http import add_clickhouse_command
parser = argparse.ArgumentParser()
add_clickhouse_command(parser.add_subparsers(dest="command", required=True))
args = parser.parse_args(sys.argv[2:])
data = Path(sys.argv[1])
settings = types.SimpleNamespace(data_dir=data, chdb_path=data / "clickhouse", clickhouse_database="cli_db")
sys.exit(args.handler(args, settings))
"""


def test_clickhouse_serve_command(tmp_path: Path) -> None:
    import subprocess
    import sys
    import time

    from driftline.local_kafka import free_port

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", _CLI, str(tmp_path), "clickhouse", "serve", "--port", str(port),
         "--user", "admin:pw", "--readonly-user", "viewer:v"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60  # readiness wait (loading chdb), not an assertion
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if httpx.get(f"{url}/ping").text == "Ok.\n":
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        assert (
            httpx.post(url, content="SELECT currentDatabase()", auth=("admin", "pw")).text
            == "cli_db\n"
        )
        assert (
            httpx.post(
                url, content="CREATE TABLE x (a UInt8) ENGINE = Memory", auth=("viewer", "v")
            ).status_code
            == 403
        )
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out.decode()
    assert b"ClickHouse HTTP interface for" in out


def test_server_store_takes_the_workers_batches(server: ServerHandle) -> None:
    """The shapes the worker hands a store (numpy columns, dense_map feature matrices, a Sink
    flushing with a dedup token) go through ServerStore over HTTP as through EmbeddedStore."""
    import numpy as np
    from driftline.sinks import Sink, dense_map

    database = f"driftline_test_{next(_names)}"
    remote = open_store(f"http://rw:rw-secret@127.0.0.1:{server.port}", database, Path("/x"))
    try:
        remote.migrate()
        n = 1000
        start = now_ms()
        feats = np.arange(n * 3, dtype=np.float64).reshape(n, 3)
        columns = {
            "event_id": [f"p{i}" for i in range(n)],
            "model_id": ["m2"] * n,
            "model_version": ["v1"] * n,
            "event_time": np.arange(start, start + n, dtype=np.int64),
            "numeric_features": dense_map(["a", "b", "c"], feats),
            "prediction_score": np.linspace(0, 1, n),
        }
        sink = Sink(remote, max_rows=10_000, max_seconds=60.0)
        sink.add("predictions", columns)
        assert sink.flush_all(dedup_token="w-1") == {"predictions": n}
        sink.add("predictions", columns)
        sink.flush_all(dedup_token="w-1")  # a replayed worker batch: dropped by its token
        got = remote.query(
            "SELECT count(), sum(numeric_features['c']), min(event_time), max(prediction_score) "
            "FROM predictions"
        )
        count, total_c, first, top = got[0]
        assert count == n and total_c == float(feats[:, 2].sum()) and top == 1.0
        assert int(first.timestamp() * 1000) == start
    finally:
        remote.command(f"DROP DATABASE IF EXISTS {database}")
        remote.close()
