"""Slow clients against a real ``connectlink serve``: 408 and a closed connection, not a socket
held for as long as the client likes (``server/protocol.py`` says why uvicorn needs help).

Raw sockets, since HTTP clients will not send a request slowly. Every socket operation has a
timeout and every loop a bound, so each test ends by itself well within 15 s.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from support import ServeProcess, new_retailer

TIMEOUT_BODY = b'{"error":{"message":"Request Timeout","code":4001},"meta":{}}'
GET_USER = b"GET /v2/fulfillment/users/u1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
SLOW_HEADERS = GET_USER[:-2] + b"X-Slow: " + b"a" * 200 + b"\r\n\r\n"  # never done in 5 s
BOUND = 8.0  # a generous upper bound for a 1 s timeout to act; never a precise timing


class Response:
    """One HTTP/1.1 response read off a socket (``Content-Length`` framed: ours all are)."""

    def __init__(self, head: bytes, body: bytes) -> None:
        status_line, *lines = head.decode("latin-1").split("\r\n")
        self.status = int(status_line.split()[1])
        self.headers = {k.strip().lower(): v.strip() for k, v in
                        (line.split(":", 1) for line in lines if line)}
        self.body = body


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    database = Path(tmp_path_factory.mktemp("timeouts")) / "t.db"
    serve = ServeProcess(f"sqlite:///{database}", "--no-demo", env={
        "CONNECTLINK_HEADER_TIMEOUT": "1", "CONNECTLINK_BODY_TIMEOUT": "1"})
    try:
        yield serve
    finally:
        serve.stop()


def connect(server: ServeProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=BOUND)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_response(sock: socket.socket, buffer: bytearray) -> Response:
    """The next response; ``buffer`` keeps bytes already read past it (pipelining)."""
    deadline = time.monotonic() + BOUND
    while b"\r\n\r\n" not in buffer:
        buffer += receive(sock, deadline)
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    length = int(Response(head, b"").headers.get("content-length", "0"))
    while len(rest) < length:
        rest += receive(sock, deadline)
    buffer[:] = rest[length:]
    return Response(head, rest[:length])


def receive(sock: socket.socket, deadline: float) -> bytes:
    sock.settimeout(max(0.01, deadline - time.monotonic()))
    data = sock.recv(65536)
    assert data, "the server closed the connection before a whole response"
    return data


def assert_closed(sock: socket.socket, leftover: bytearray) -> None:
    """The server closes its end: recv returns b"" (and nothing else arrives first)."""
    assert not leftover
    sock.settimeout(BOUND)
    assert sock.recv(65536) == b""


def assert_timeout_response(response: Response) -> None:
    assert response.status == 408
    assert response.body == TIMEOUT_BODY
    assert response.headers["content-type"] == "application/json"
    assert response.headers["connection"] == "close"


def trickle(sock: socket.socket, data: bytes, every: float = 0.2, limit: float = 5.0) -> float:
    """Send ``data`` a byte at a time until the server answers or closes, or ``limit``
    seconds pass; the seconds it took. The answer is left unread on the socket.

    The second byte follows the first after half an interval, so no byte is sent near a
    whole second after the first (the server's 1 s deadline): a byte that reaches the server
    just after its close makes its kernel answer with RST, and our last recv would then raise
    ECONNRESET instead of returning the b"" that shows an orderly close."""
    start = time.monotonic()
    for index, byte in enumerate(data):
        if time.monotonic() - start > limit:
            break
        try:
            sock.send(bytes([byte]))
        except OSError:  # closed already: the answer (if any) waits in our receive buffer
            break
        sock.settimeout(every / 2 if index == 0 else every)
        try:
            if sock.recv(1, socket.MSG_PEEK):
                break
        except TimeoutError:
            continue
        break  # b"": closed without an answer; the caller's assertions will say so
    return time.monotonic() - start


def test_trickled_headers_get_408_and_close(server: ServeProcess) -> None:
    with connect(server) as sock:
        took = trickle(sock, SLOW_HEADERS)
        assert took < 5.0, "the server waited for the trickled headers the whole 5 s"
        buffer = bytearray()
        assert_timeout_response(read_response(sock, buffer))
        assert_closed(sock, buffer)


def test_silent_connection_is_closed_without_an_answer(server: ServeProcess) -> None:
    """Nothing asked, nothing answered: closed, with no unsolicited 408."""
    with connect(server) as sock:
        assert_closed(sock, bytearray())


def test_normal_request_still_answered(server: ServeProcess) -> None:
    with connect(server) as sock:
        sock.sendall(GET_USER)
        buffer = bytearray()
        response = read_response(sock, buffer)
    assert response.status == 401
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_keep_alive_answers_each_request(server: ServeProcess) -> None:
    """Two requests in turn, the second after an idle pause longer than the header timeout
    (its deadline runs from its own first byte), then two pipelined in one write."""
    with connect(server) as sock:
        buffer = bytearray()
        sock.sendall(GET_USER)
        assert read_response(sock, buffer).status == 401
        time.sleep(1.5)  # > header timeout, < uvicorn's 5 s keep-alive timeout
        sock.sendall(GET_USER)
        assert read_response(sock, buffer).status == 401
        sock.sendall(GET_USER + GET_USER)
        assert [read_response(sock, buffer).status for _ in range(2)] == [401, 401]


@pytest.mark.parametrize("junk", [SLOW_HEADERS, b"\r\n" * 30], ids=["headers", "crlf"])
def test_trickle_after_a_response_gets_408(server: ServeProcess, junk: bytes) -> None:
    """The second request on a keep-alive connection has a deadline of its own, even when its
    first bytes are bare CRLFs that begin no request (they stop uvicorn's keep-alive timer)."""
    with connect(server) as sock:
        buffer = bytearray()
        sock.sendall(GET_USER)
        assert read_response(sock, buffer).status == 401
        assert trickle(sock, junk) < 5.0
        assert_timeout_response(read_response(sock, buffer))
        assert_closed(sock, buffer)


def test_stalled_body_gets_408(server: ServeProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=BOUND) as http:
        token = new_retailer(http, server.database_url).token
    head = (
        "POST /v2/fulfillment/users HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
        "Content-Length: 100\r\n\r\n"
    ).encode()
    with connect(server) as sock:
        sock.sendall(head + b'{"user_id"')  # 10 of the 100 bytes, then nothing
        buffer = bytearray()
        response = read_response(sock, buffer)
    assert response.status == 408
    assert response.body == TIMEOUT_BODY
    assert json.loads(response.body)["error"]["code"] == 4001


def test_a_body_that_arrives_after_its_answer_brings_no_408(server: ServeProcess) -> None:
    """Answered before its body came (a bearer refused at once), the request's late body ends
    it: the connection idles as after any answer, and no 408 follows for a request that was
    never begun."""
    sock = connect(server)
    sock.sendall(b"POST /v2/fulfillment/users HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n")
    buffer = bytearray()
    assert read_response(sock, buffer).status == 401
    sock.sendall(b"{}")
    sock.settimeout(2.5)  # the header deadline is 1 s here
    try:
        late = sock.recv(65536)
    except TimeoutError:
        late = b""
    assert b"408" not in late
    sock.sendall(GET_USER)  # and the connection still serves
    assert read_response(sock, buffer).status == 401
    sock.close()


def test_a_late_body_and_the_next_request_in_one_read(server: ServeProcess) -> None:
    """The late body's end and the next request's start in the same bytes: the next request
    is answered, whatever the keep-alive timer of the idle moment between them would do."""
    sock = connect(server)
    sock.sendall(b"POST /v2/fulfillment/users HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n")
    buffer = bytearray()
    assert read_response(sock, buffer).status == 401
    sock.sendall(b"{}" + GET_USER)
    assert read_response(sock, buffer).status == 401
    sock.close()
