"""A TLS-inspecting HTTP CONNECT proxy on 127.0.0.1, for the self-tests: it re-signs every tunnel with a throwaway
CA of its own, as the proxy in front of a Jenkins agent does, so a client that does not trust that CA fails on the
certificate on any machine, whatever the machine's own network does.

    with TlsProxy(allow={"registry.example:443"}) as proxy:
        ...  # clients use proxy.url as their https proxy; proxy.ca_file is the CA to trust; proxy.connects

It serves only inside the `with` (an asyncio loop in one thread), tunnels only to the `allow`ed host:port pairs,
verifies the real upstream with the machine's trust (SSL_CERT_FILE / the default bundle) or `upstream_ca`, goes
through the machine's https_proxy when one is set as it starts (NO_PROXY honoured), and on exit closes every socket,
ends its thread and removes its temp folder.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import ipaddress
import shutil
import ssl
import tempfile
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# --- certificates -------------------------------------------------------------------------------------------------

# A day either side of now: a skewed clock must not make the test fail on validity instead of trust.
_SLACK = datetime.timedelta(days=1)


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())  # P-256: instant, and every TLS stack accepts it


def new_ca(name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A self-signed CA (key, certificate)."""
    key = new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - _SLACK)
            .not_valid_after(now + _SLACK)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(ski, critical=False)  # OpenSSL 3's strict mode (Python 3.13's default) wants SKI/AKI
            .sign(key, hashes.SHA256()))
    return key, cert


def issue(ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, host: str,
          key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    """A server certificate for `host` (a DNS name or an IP address, as its SAN) signed by the CA."""
    try:
        san: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        san = x509.DNSName(host)
    now = datetime.datetime.now(datetime.timezone.utc)
    return (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - _SLACK)
            .not_valid_after(now + _SLACK)
            .add_extension(x509.SubjectAlternativeName([san]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))


def cert_pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


# --- the proxy ----------------------------------------------------------------------------------------------------


async def start_tls(writer: asyncio.StreamWriter, context: ssl.SSLContext, server_hostname: str | None = None) -> None:
    """StreamWriter.start_tls, which Python 3.11 added; before it, the same steps it takes (loop.start_tls, then the
    protocol told of its new writer and transport), so the proxy runs on the Pythons the suite supports (3.9+)."""
    if hasattr(writer, "start_tls"):
        await writer.start_tls(context, server_hostname=server_hostname)
        return
    protocol = writer._protocol  # type: ignore[attr-defined]
    await writer.drain()
    transport = await asyncio.get_running_loop().start_tls(
        writer.transport, protocol, context, server_side=protocol._client_connected_cb is not None,
        server_hostname=server_hostname)
    writer._transport = transport  # type: ignore[attr-defined]
    protocol._stream_writer, protocol._transport, protocol._over_ssl = writer, transport, True


def _split(target: str) -> tuple[str, int]:
    host, _, port = target.rpartition(":")
    return host.strip("[]"), int(port)


class TlsProxy:
    """The proxy; a context manager. `connects` lists each allowed CONNECT ("host:port") in order, `refused` the
    others, `errors` what went wrong in a tunnel (a client rejecting the certificate, an upstream failing)."""

    def __init__(self, allow: Iterable[str], *, upstream_ca: str | Path | None = None, timeout: float = 30.0):
        self.allow = {a.lower() for a in allow}
        self.upstream_ca = str(upstream_ca) if upstream_ca else None
        self.timeout = timeout
        self.connects: list[str] = []
        self.refused: list[str] = []
        self.errors: list[str] = []
        self.url = ""
        self.ca_file = Path()
        self._dir: Path | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._contexts: dict[str, ssl.SSLContext] = {}

    # -- lifecycle

    def __enter__(self) -> TlsProxy:
        self._dir = Path(tempfile.mkdtemp(prefix="tls-proxy-"))
        try:
            self._ca_key, self._ca = new_ca("kvpool selftest TLS-inspecting proxy CA")
            self._leaf_key = new_key()  # one key for every host's leaf: only the certificate names the host
            self.ca_file = self._dir / "ca.pem"
            self.ca_file.write_bytes(cert_pem(self._ca))
            (self._dir / "ca-key.pem").write_bytes(key_pem(self._ca_key))
            (self._dir / "leaf-key.pem").write_bytes(key_pem(self._leaf_key))
            # The upstream side: the machine's trust (SSL_CERT_FILE / SSL_CERT_DIR / the default bundle), whose
            # own network may re-sign TLS too, unless a test names the CA of its local server.
            self._upstream = ssl.create_default_context(cafile=self.upstream_ca)
            # The machine's own proxy, read once: what it is when the proxy starts holds until it stops.
            self._machine_proxies = urllib.request.getproxies_environment()
            started = threading.Event()
            failed: list[BaseException] = []
            self._thread = threading.Thread(target=self._run, args=(started, failed), name="tls-proxy", daemon=True)
            self._thread.start()
            started.wait(30)
            if failed or not self.url:
                raise RuntimeError(f"the TLS proxy did not start: {failed[0] if failed else 'timeout'}")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(30)
            if self._thread.is_alive():
                raise RuntimeError("the TLS proxy's thread did not end")
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def _run(self, started: threading.Event, failed: list[BaseException]) -> None:
        try:
            asyncio.run(self._serve(started))  # asyncio.run also ends its resolver threads on the way out
        except BaseException as e:  # reported to __enter__, which raises it
            failed.append(e)
            started.set()

    async def _serve(self, started: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        tasks: set[asyncio.Task] = set()
        writers: set[asyncio.StreamWriter] = set()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            tasks.add(asyncio.current_task())
            own = [writer]  # this tunnel's two connections; `writers` holds every open one, for the exit
            writers.add(writer)
            try:
                await self._tunnel(reader, writer, own, writers)
            except asyncio.CancelledError:
                pass  # the proxy is stopping; ending quietly spares asyncio a logged CancelledError per tunnel
            except Exception as e:  # one tunnel's failure is recorded, the proxy serves on
                self.errors.append(f"{type(e).__name__}: {e}")
            finally:
                for w in own:
                    w.transport.abort()
                    writers.discard(w)
                tasks.discard(asyncio.current_task())

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        started.set()
        try:
            await self._stop.wait()
        finally:
            server.close()
            for w in list(writers):  # abort, not close: no TLS goodbye owed to anyone at the end of a test
                w.transport.abort()
            for t in list(tasks):
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await server.wait_closed()

    # -- one tunnel

    def _context_for(self, host: str) -> ssl.SSLContext:
        """The client-facing TLS context for `host`: its leaf, then the CA, as a real inspecting proxy sends."""
        if host not in self._contexts:
            assert self._dir is not None
            chain = self._dir / f"chain-{len(self._contexts)}.pem"
            chain.write_bytes(cert_pem(issue(self._ca_key, self._ca, host, self._leaf_key), self._ca))
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(chain), str(self._dir / "leaf-key.pem"))
            self._contexts[host] = context
        return self._contexts[host]

    async def _tunnel(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      own: list[asyncio.StreamWriter], writers: set[asyncio.StreamWriter]) -> None:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.timeout)
        method, target, *_ = head.split(b"\r\n", 1)[0].decode("latin-1").split() + ["", ""]
        if method.upper() != "CONNECT":
            writer.write(b"HTTP/1.1 405 Method Not Allowed\r\nConnection: close\r\n\r\n")
            return
        if target.lower() not in self.allow:  # never a connection anywhere else
            self.refused.append(target)
            writer.write(b"HTTP/1.1 403 Forbidden\r\nConnection: close\r\n\r\n")
            return
        self.connects.append(target)
        host, port = _split(target)
        try:
            up_reader, up_writer = await asyncio.wait_for(self._open_upstream(host, port, own, writers), self.timeout)
        except Exception as e:
            self.errors.append(f"upstream {target}: {type(e).__name__}: {e}")
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\n\r\n")
            return
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        try:
            await asyncio.wait_for(start_tls(writer, self._context_for(host)), self.timeout)
        except (ssl.SSLError, ConnectionError, TimeoutError) as e:
            self.errors.append(f"client refused the re-signed certificate for {host}: {type(e).__name__}: {e}")
            return
        pipes = [asyncio.create_task(self._copy(reader, up_writer)), asyncio.create_task(self._copy(up_reader, writer))]
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)  # until either side closes
        finally:
            for p in pipes:
                p.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)

    async def _open_upstream(self, host: str, port: int, own: list[asyncio.StreamWriter],
                             writers: set[asyncio.StreamWriter]):
        """TLS to the real host:port, verified; through the machine's own HTTPS proxy when it has one."""
        proxy = self._machine_proxies.get("https")
        if proxy and not urllib.request.proxy_bypass_environment(host, self._machine_proxies):
            parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
            if parts.scheme != "http":
                raise OSError(f"upstream proxy {parts.scheme}:// is not supported here, only http://")
            up_reader, up_writer = await asyncio.open_connection(parts.hostname, parts.port or 80)
            own.append(up_writer)
            writers.add(up_writer)
            auth = ""
            if parts.username:
                token = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
                auth = f"Proxy-Authorization: Basic {base64.b64encode(token.encode()).decode()}\r\n"
            up_writer.write(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n{auth}\r\n".encode())
            answer = await up_reader.readuntil(b"\r\n\r\n")
            status = answer.split(b"\r\n", 1)[0].decode("latin-1")
            if status.split()[1:2] != ["200"]:
                raise OSError(f"upstream proxy {parts.hostname}:{parts.port} answered {status!r}")
            await start_tls(up_writer, self._upstream, server_hostname=host)
            return up_reader, up_writer
        up_reader, up_writer = await asyncio.open_connection(host, port, ssl=self._upstream, server_hostname=host)
        own.append(up_writer)
        writers.add(up_writer)
        return up_reader, up_writer

    @staticmethod
    async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
