"""The hub counts as reachable exactly when huggingface_hub's own session gets an answer.

A stand-in hub (HTTP, and HTTPS with a throw-away certificate) and a proxy (forwarding and
CONNECT) run on 127.0.0.1 only, in daemon threads with socket timeouts, stopped by the fixtures.
The proxy never opens a connection anywhere but the local stand-in.
"""

from __future__ import annotations

import http.server
import select
import shutil
import socket
import socketserver
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest

from gpt2probe.loading import hub_reachable

LOOPBACK = "127.0.0.1"
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


class _Hub(http.server.BaseHTTPRequestHandler):
    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self.server.requests.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


class _Proxy(socketserver.BaseRequestHandler):
    """CONNECT tunnels to the local stand-in hub; absolute-form requests are answered here."""

    def handle(self) -> None:
        conn = self.request
        conn.settimeout(5)
        head = b""
        while b"\r\n\r\n" not in head and len(head) < 65536:
            chunk = conn.recv(4096)
            if not chunk:
                return
            head += chunk
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        self.server.requests.append(request_line)
        method, target = request_line.split(" ")[:2]
        if method != "CONNECT":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return
        host, _, port = target.rpartition(":")
        if host != LOOPBACK or int(port) != self.server.tunnel_port:  # only ever the local stand-in
            conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            return
        with socket.create_connection((LOOPBACK, self.server.tunnel_port), timeout=5) as upstream:
            conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            _pipe(conn, upstream)


def _pipe(a: socket.socket, b: socket.socket, limit_s: float = 5.0) -> None:
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        ready, _, _ = select.select([a, b], [], [], 0.2)
        for src in ready:
            data = src.recv(65536)
            if not data:
                return
            (b if src is a else a).sendall(data)


def _serve(server: socketserver.BaseServer) -> threading.Thread:
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def clean_session(monkeypatch) -> Iterator[None]:
    """No proxy from the machine's environment, offline mode off, and a fresh huggingface_hub session."""
    import huggingface_hub.constants as hub
    from huggingface_hub.utils import close_session

    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub, "HF_HUB_ETAG_TIMEOUT", 5)
    close_session()
    yield
    close_session()  # the next session is made from the restored environment


@pytest.fixture
def http_hub() -> Iterator[socketserver.TCPServer]:
    server = http.server.ThreadingHTTPServer((LOOPBACK, 0), _Hub)
    thread = _serve(server)
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def proxy() -> Iterator[socketserver.TCPServer]:
    server = socketserver.ThreadingTCPServer((LOOPBACK, 0), _Proxy)
    server.daemon_threads = True
    server.tunnel_port = None
    server.server_port = server.server_address[1]
    thread = _serve(server)
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def _use(monkeypatch, endpoint: str, **env: str) -> None:
    import huggingface_hub.constants as hub
    from huggingface_hub.utils import close_session

    monkeypatch.setattr(hub, "ENDPOINT", endpoint)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    close_session()  # huggingface_hub reads the proxy variables when it makes its session


def test_a_hub_that_answers_is_reachable(clean_session, monkeypatch, http_hub):
    _use(monkeypatch, f"http://{LOOPBACK}:{http_hub.server_port}")
    assert hub_reachable() == (True, "")
    assert http_hub.requests == ["/"]


def test_no_answer_fails_fast_and_says_why(clean_session, monkeypatch):
    _use(monkeypatch, f"http://{LOOPBACK}:{_closed_port()}")
    start = time.monotonic()
    reachable, why = hub_reachable()
    assert not reachable and "ConnectError" in why and str(LOOPBACK) in why
    assert time.monotonic() - start < 5


def test_offline_mode_sends_nothing(clean_session, monkeypatch, http_hub):
    import huggingface_hub.constants as hub

    _use(monkeypatch, f"http://{LOOPBACK}:{http_hub.server_port}")
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    assert hub_reachable() == (False, "HF_HUB_OFFLINE is set")
    assert http_hub.requests == []


def test_through_a_forwarding_proxy_and_not_past_no_proxy(clean_session, monkeypatch, proxy):
    """The endpoint itself refuses connections: only the proxy can answer for it."""
    endpoint = f"http://{LOOPBACK}:{_closed_port()}"
    _use(monkeypatch, endpoint, HTTP_PROXY=f"http://{LOOPBACK}:{proxy.server_port}")
    assert hub_reachable() == (True, "")
    assert proxy.requests == [f"HEAD {endpoint}/ HTTP/1.1"]
    _use(monkeypatch, endpoint, NO_PROXY=LOOPBACK)
    assert hub_reachable()[0] is False
    assert len(proxy.requests) == 1


@pytest.fixture
def tls_hub(tmp_path) -> Iterator[tuple[socketserver.TCPServer, str]]:
    """The stand-in hub over TLS, with a throw-away self-signed certificate for 127.0.0.1."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a test certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    server = http.server.ThreadingHTTPServer((LOOPBACK, 0), _Hub)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = _serve(server)
    yield server, str(cert)
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_https_through_a_connect_proxy(clean_session, monkeypatch, tls_hub, proxy):
    """The case a raw TCP probe got wrong: HTTPS through an HTTP CONNECT proxy named by HTTPS_PROXY."""
    server, cert = tls_hub
    proxy.tunnel_port = server.server_port
    endpoint = f"https://{LOOPBACK}:{server.server_port}"
    _use(monkeypatch, endpoint, SSL_CERT_FILE=cert, HTTPS_PROXY=f"http://{LOOPBACK}:{proxy.server_port}")
    assert hub_reachable() == (True, "")
    assert proxy.requests == [f"CONNECT {LOOPBACK}:{server.server_port} HTTP/1.1"]
    assert server.requests == ["/"]
