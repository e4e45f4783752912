"""tests/selftest/tls_proxy.py without the internet: the proxy re-signs a local HTTPS server on 127.0.0.1, so a
client that trusts only the proxy's CA reads through it and one that trusts only the server's own CA fails on the
certificate; it refuses hosts it was not allowed, verifies the upstream, chains through the machine's HTTPS proxy,
and leaves no thread, port or temp file behind."""

from __future__ import annotations

import http.client
import http.server
import re
import socket
import ssl
import threading
from pathlib import Path

import pytest

from harness.waiting import wait_until
from tests.selftest.tls_proxy import TlsProxy, cert_pem, issue, key_pem, new_ca, new_key

BODY = b"hello through the tunnel\n"


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # http.server calls it by this name
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server(tmp_path):
    """An HTTPS server for `localhost` on 127.0.0.1, its certificate from its own CA; yields (port, its CA file,
    the list of connections it accepted)."""
    ca_key, ca = new_ca("local server CA")
    key = new_key()
    (tmp_path / "server.pem").write_bytes(cert_pem(issue(ca_key, ca, "localhost", key)))
    (tmp_path / "server-key.pem").write_bytes(key_pem(key))
    (tmp_path / "server-ca.pem").write_bytes(cert_pem(ca))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "server.pem", tmp_path / "server-key.pem")
    accepted: list[tuple] = []

    class Server(http.server.ThreadingHTTPServer):
        def get_request(self):
            sock, addr = super().get_request()
            accepted.append(addr)
            return context.wrap_socket(sock, server_side=True), addr

    httpd = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield httpd.server_address[1], tmp_path / "server-ca.pem", accepted
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


@pytest.fixture(autouse=True)
def no_machine_proxy(monkeypatch):
    """The proxy would chain through the machine's HTTPS proxy: none here, unless a test sets one."""
    for name in ("https_proxy", "HTTPS_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)


def get(proxy_url: str, port: int, cafile: Path) -> tuple[int, bytes]:
    """GET https://localhost:port/ through the proxy, trusting only `cafile`."""
    host, proxy_port = proxy_url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPSConnection(host, int(proxy_port), timeout=10,
                                       context=ssl.create_default_context(cafile=str(cafile)))
    conn.set_tunnel("localhost", port)
    try:
        conn.request("GET", "/")
        answer = conn.getresponse()
        return answer.status, answer.read()
    finally:
        conn.close()


def test_a_client_trusting_the_proxy_ca_reads_the_upstream_through_it(server):
    port, server_ca, accepted = server
    with TlsProxy(allow={f"localhost:{port}"}, upstream_ca=server_ca) as proxy:
        assert get(proxy.url, port, proxy.ca_file) == (200, BODY)
        assert get(proxy.url, port, proxy.ca_file) == (200, BODY)
    assert proxy.connects == [f"localhost:{port}"] * 2
    assert len(accepted) == 2 and proxy.errors == []


def test_a_client_trusting_only_the_servers_own_ca_fails_on_the_certificate(server):
    port, server_ca, accepted = server
    with TlsProxy(allow={f"localhost:{port}"}, upstream_ca=server_ca) as proxy:
        with pytest.raises(ssl.SSLCertVerificationError) as failed:
            get(proxy.url, port, server_ca)
        # The proxy hears the client's alert a moment after the client gave up (longer on a slow or emulated host).
        wait_until(lambda: proxy.errors, timeout_s=10, interval_s=0.05)
    # The proxy sends its CA after the leaf, as an inspecting proxy does: OpenSSL's (and Node's)
    # SELF_SIGNED_CERT_IN_CHAIN.
    assert failed.value.verify_code == 19, failed.value
    # OpenSSL 3 writes "self-signed", 1.1.1 (Debian bullseye's, the emulated Atlas host's) "self signed".
    assert re.search(r"self.signed certificate in certificate chain", failed.value.verify_message), failed.value
    assert proxy.connects == [f"localhost:{port}"]
    assert any("client refused the re-signed certificate for localhost" in e for e in proxy.errors), proxy.errors


def test_a_host_not_allowed_is_refused_and_never_connected_to(server):
    port, server_ca, accepted = server
    with TlsProxy(allow={"registry.example:443"}, upstream_ca=server_ca) as proxy:
        with pytest.raises(OSError, match="403"):
            get(proxy.url, port, proxy.ca_file)
    assert proxy.refused == [f"localhost:{port}"] and proxy.connects == [] and accepted == []


def test_the_upstream_is_verified_with_the_machines_trust_by_default(server):
    port, _, accepted = server
    with TlsProxy(allow={f"localhost:{port}"}) as proxy:  # the local server's CA is no CA of this machine
        with pytest.raises(OSError, match="502"):
            get(proxy.url, port, proxy.ca_file)
    assert len(accepted) == 1
    assert any("CERTIFICATE_VERIFY_FAILED" in e for e in proxy.errors), proxy.errors


def test_it_chains_through_the_machines_https_proxy(server, monkeypatch):
    """The machine's proxy is itself an inspecting proxy here, so the inner one trusts its CA for the upstream."""
    port, server_ca, accepted = server
    with TlsProxy(allow={f"localhost:{port}"}, upstream_ca=server_ca) as machine:
        monkeypatch.setenv("https_proxy", machine.url)
        with TlsProxy(allow={f"localhost:{port}"}, upstream_ca=machine.ca_file) as proxy:
            assert get(proxy.url, port, proxy.ca_file) == (200, BODY)
    assert machine.connects == proxy.connects == [f"localhost:{port}"]
    assert len(accepted) == 1 and machine.errors == proxy.errors == []


def test_it_leaves_no_thread_port_or_temp_file(server):
    port, server_ca, _ = server
    with TlsProxy(allow={f"localhost:{port}"}, upstream_ca=server_ca) as proxy:
        folder = proxy.ca_file.parent
        assert get(proxy.url, port, proxy.ca_file) == (200, BODY)
        # A tunnel still open at the exit (a client that keeps its connection alive) is closed too.
        held = socket.create_connection(("127.0.0.1", int(proxy.url.rsplit(":", 1)[1])))
        held.sendall(f"CONNECT localhost:{port} HTTP/1.1\r\n\r\n".encode())
        assert held.recv(100).startswith(b"HTTP/1.1 200")
    try:
        held.settimeout(5)
        assert held.recv(100) == b""  # closed by the proxy
    finally:
        held.close()
    assert not folder.exists()
    # Its own thread and asyncio's resolver threads (the local server's request threads are not the proxy's).
    assert [t.name for t in threading.enumerate() if t.name.startswith(("tls-proxy", "asyncio_"))] == []
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", int(proxy.url.rsplit(":", 1)[1])), timeout=2).close()
