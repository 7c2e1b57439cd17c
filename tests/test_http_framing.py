"""What HTTP itself says about a request, against a real ``connectlink serve`` on raw sockets
(``server/protocol.py``): header caps answered 431 (decisions.md), one valid ``Host`` or 400
(RFC 9112 section 3.2), and an ``Upgrade: h2c`` offer served as plain HTTP/1.1 (RFC 9110
section 7.8), as Java's ``HttpClient`` sends it on every cleartext request.

Every socket operation has a timeout and every loop a bound, so each test ends by itself.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from support import Retailer, ServeProcess, new_retailer
from test_timeouts import BOUND, Response, assert_closed, connect, read_response

TOO_LARGE = (b'{"error":{"message":"Request Header Fields Too Large","code":4001},'
             b'"meta":{}}')
BAD_REQUEST = b'{"error":{"message":"Bad Request","code":4001},"meta":{}}'
H2C = (b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
       b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n")
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServeProcess, Retailer]]:
    database = f"sqlite:///{Path(tmp_path_factory.mktemp('framing')) / 'f.db'}"
    serve = ServeProcess(database, "--no-demo")
    try:
        with httpx.Client(base_url=serve.url) as http:
            yield serve, new_retailer(http, database)
    finally:
        serve.stop()


@pytest.fixture
def server(served: tuple[ServeProcess, Retailer]) -> ServeProcess:
    return served[0]


def exchange(server: ServeProcess, *requests: bytes) -> tuple[list[Response], socket.socket,
                                                              bytearray]:
    """Send each request on one connection and read its answer."""
    sock, buffer, answers = connect(server), bytearray(), []
    for request in requests:
        sock.sendall(request)
        answers.append(read_response(sock, buffer))
    return answers, sock, buffer


def refused(server: ServeProcess, request: bytes, status: int, body: bytes) -> None:
    answers, sock, buffer = exchange(server, request)
    with sock:
        assert (answers[0].status, answers[0].body) == (status, body)
        assert answers[0].headers["connection"] == "close"
        assert answers[0].headers["content-type"] == "application/json"
        assert answers[0].headers["x-content-type-options"] == "nosniff"
        assert_closed(sock, buffer)


def token_request(shop: Retailer, extra: bytes = b"", form: bool = False,
                  chunked: bool = False) -> bytes:
    fields = {"grant_type": "client_credentials", "client_id": shop.client_id,
              "client_secret": shop.client_secret}
    body = (httpx.QueryParams(fields).__str__().encode() if form
            else json.dumps(fields).encode())
    kind = b"application/x-www-form-urlencoded" if form else b"application/json"
    framing = (b"Transfer-Encoding: chunked\r\n" if chunked
               else b"Content-Length: %d\r\n" % len(body))
    if chunked:
        half = len(body) // 2
        body = b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (half, body[:half], len(body) - half,
                                                      body[half:])
    return (b"POST /v2/oauth/token HTTP/1.1\r\nHost: 127.0.0.1\r\n" + extra +
            b"Content-Type: " + kind + b"\r\n" + framing + b"\r\n" + body)


# --- Upgrade: h2c --------------------------------------------------------------------------
@pytest.mark.parametrize("body", ["json", "form", "chunked"])
def test_an_h2c_offer_is_served_as_http_1_1_and_the_connection_kept(
    served: tuple[ServeProcess, Retailer], body: str
) -> None:
    server, shop = served
    offered = token_request(shop, H2C, form=body == "form", chunked=body == "chunked")
    answers, sock, _ = exchange(server, offered, HEALTHZ + H2C + b"\r\n", HEALTHZ + b"\r\n",
                                token_request(shop))
    with sock:
        assert [a.status for a in answers] == [200, 200, 200, 200]
        assert json.loads(answers[0].body)["token_type"] == "Bearer"
        assert "upgrade" not in answers[0].headers  # nothing was switched
        assert json.loads(answers[3].body)["token_type"] == "Bearer"


def test_an_h2c_offer_pipelined_with_the_next_request(
    served: tuple[ServeProcess, Retailer],
) -> None:
    server, shop = served
    with connect(server) as sock:
        sock.sendall(token_request(shop, H2C) + HEALTHZ + b"\r\n")
        buffer = bytearray()
        first, second = read_response(sock, buffer), read_response(sock, buffer)
    assert (first.status, second.status) == (200, 200)
    assert json.loads(second.body) == {"status": "ok"}


# --- header caps: 431 ----------------------------------------------------------------------
def test_a_header_line_over_8_kib_is_431(server: ServeProcess) -> None:
    refused(server, HEALTHZ + b"X-Big: " + b"a" * 8 * 1024 + b"\r\n\r\n", 431, TOO_LARGE)


def test_a_request_line_over_8_kib_is_431(server: ServeProcess) -> None:
    refused(server, b"GET /healthz?" + b"a" * 8 * 1024 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 431,
            TOO_LARGE)


def test_headers_over_32_kib_in_all_are_431(server: ServeProcess) -> None:
    lines = b"".join(b"X-Part-%d: %s\r\n" % (n, b"b" * 1000) for n in range(40))
    refused(server, HEALTHZ + lines + b"\r\n", 431, TOO_LARGE)


def test_more_than_100_fields_are_431_and_100_are_served(server: ServeProcess) -> None:
    many = b"".join(b"X-F%d: v\r\n" % n for n in range(100))  # with Host: 101
    refused(server, HEALTHZ + many + b"\r\n", 431, TOO_LARGE)
    answers, sock, _ = exchange(server, HEALTHZ + many[: many.index(b"X-F99")] + b"\r\n")
    with sock:
        assert answers[0].status == 200


def test_an_endless_header_line_is_cut_at_its_cap(server: ServeProcess) -> None:
    """A 1 MB line sent in pieces: refused once past 8 KiB, long before its end."""
    with connect(server) as sock:
        sock.sendall(HEALTHZ + b"X-Endless: ")
        sent = 0
        try:
            while sent < 1024 * 1024:
                sock.sendall(b"c" * 4096)
                sent += 4096
        except OSError:  # the server closed: the answer waits in our receive buffer
            pass
        answer = read_response(sock, bytearray())
    assert (answer.status, answer.body) == (431, TOO_LARGE)


def test_clients_streaming_headers_do_not_stall_the_server(server: ServeProcess) -> None:
    """16 clients streaming a header without end each get 431 once past the cap, and the
    server answers /healthz meanwhile."""
    answers: list[int] = []

    def stream() -> None:
        with connect(server) as sock:
            sock.sendall(HEALTHZ + b"X-Stream: ")
            try:
                for _ in range(64):
                    sock.sendall(b"d" * 1024)
                    time.sleep(0.005)
            except OSError:
                pass
            answers.append(read_response(sock, bytearray()).status)

    streams = [threading.Thread(target=stream) for _ in range(16)]
    for thread in streams:
        thread.start()
    with httpx.Client(base_url=server.url, timeout=BOUND) as http:
        assert http.get("/healthz").status_code == 200
    for thread in streams:
        thread.join(BOUND)
    assert answers == [431] * 16


# --- Host: exactly one, and valid ----------------------------------------------------------
@pytest.mark.parametrize("hosts", [
    [b"localhost", b"evil.example"], [b"evil.example", b"localhost"], [b"localhost:abc"],
    [b"local host"], [b"[::1"], [],
])
def test_a_request_without_exactly_one_valid_host_is_400(server: ServeProcess,
                                                         hosts: list[bytes]) -> None:
    lines = b"".join(b"Host: " + host + b"\r\n" for host in hosts)
    for path in (b"/healthz", b"/_connectlink/faults"):  # the admin plane never sees it
        refused(server, b"GET " + path + b" HTTP/1.1\r\n" + lines + b"\r\n", 400, BAD_REQUEST)


@pytest.mark.parametrize("host", [b"localhost", b"localhost:8080", b"127.0.0.1:1", b"[::1]:80",
                                  b"shop.example", b"xn--bcher-kva.example:443"])
def test_a_valid_host_is_served(server: ServeProcess, host: bytes) -> None:
    answers, sock, _ = exchange(server, b"GET /healthz HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
    with sock:
        assert answers[0].status == 200


def test_http_1_0_needs_no_host(server: ServeProcess) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
        answer = read_response(sock, bytearray())
    assert answer.status == 200


# --- refusals in a pipeline, trailers, and requests HTTP cannot parse ----------------------
def test_a_refusal_waits_for_the_answers_owed_before_it(
    served: tuple[ServeProcess, Retailer],
) -> None:
    """Pipelined behind a request still being answered, a refused request is answered after
    it, in order: no answer is lost for a request that was served."""
    server, shop = served
    token = json.loads(exchange(server, token_request(shop))[0][0].body)["access_token"]
    body = json.dumps({"user_id": "pipelined", "first_name": "p"}).encode()
    create = (b"POST /v2/fulfillment/users HTTP/1.1\r\nHost: 127.0.0.1\r\n"
              b"Authorization: Bearer " + token.encode() + b"\r\n"
              b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    for refused_request, status, envelope in (
        (b"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, BAD_REQUEST),
        (HEALTHZ + b"X-Big: " + b"a" * 9000 + b"\r\n\r\n", 431, TOO_LARGE),
    ):
        with connect(server) as sock:
            sock.sendall(create + refused_request)
            buffer = bytearray()
            first, second = read_response(sock, buffer), read_response(sock, buffer)
            assert first.status == 200 and json.loads(first.body)["user_id"] == "pipelined"
            assert (second.status, second.body) == (status, envelope)
            assert_closed(sock, buffer)


def test_a_long_body_line_before_the_next_request_is_no_header(
    served: tuple[ServeProcess, Retailer],
) -> None:
    """The bytes after the last line feed of a read may be an earlier body's, not a header's."""
    server, shop = served
    fields = {"grant_type": "client_credentials", "client_id": shop.client_id,
              "client_secret": shop.client_secret, "scope": "connect:fulfillment",
              "padding": "p" * 9000}
    body = json.dumps(fields).encode()  # one line of 9 KB
    request = (b"POST /v2/oauth/token HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
               b"application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    with connect(server) as sock:
        sock.sendall(request + b"GET /hea")
        buffer = bytearray()
        assert read_response(sock, buffer).status != 431
        sock.sendall(b"lthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert read_response(sock, buffer).status == 200


def test_an_endless_trailer_is_cut_at_its_cap(served: tuple[ServeProcess, Retailer]) -> None:
    server, shop = served
    chunked = token_request(shop, chunked=True)
    with connect(server) as sock:
        sock.sendall(chunked[: chunked.rindex(b"0\r\n\r\n")] + b"0\r\nX-Trailer: ")
        try:
            for _ in range(256):  # up to 1 MB
                sock.sendall(b"t" * 4096)
        except OSError:
            pass
        buffer = bytearray()
        answers = [read_response(sock, buffer)]
        if answers[0].status == 200:  # the token may be answered before its trailer ends
            answers.append(read_response(sock, buffer))
    assert answers[-1].status == 431 and answers[-1].body == TOO_LARGE


def test_an_h2c_offer_keeps_uvicorns_pipelining_after_a_close(
    served: tuple[ServeProcess, Retailer],
) -> None:
    server, _ = served
    with connect(server) as sock:
        sock.sendall(HEALTHZ + H2C + b"\r\n" + HEALTHZ + b"Connection: close\r\n\r\n" +
                     HEALTHZ + b"\r\n")
        buffer = bytearray()
        first, second = read_response(sock, buffer), read_response(sock, buffer)
    assert (first.status, second.status) == (200, 200)
    assert second.headers["connection"] == "close"


def test_many_pipelined_h2c_offers_are_each_answered(server: ServeProcess) -> None:
    """Each declined offer leaves the rest to parse again: a loop, so 2,000 of them in one
    send neither recurse nor fail."""
    count = 2000
    with connect(server) as sock:
        sock.sendall((HEALTHZ + H2C + b"\r\n") * count)
        buffer = bytearray()
        statuses = [read_response(sock, buffer).status for _ in range(count)]
    assert statuses == [200] * count


def test_a_request_http_cannot_parse_gets_the_envelope(server: ServeProcess) -> None:
    refused(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", 400, BAD_REQUEST)
