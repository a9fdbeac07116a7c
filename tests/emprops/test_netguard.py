"""The SSRF guard: refusals are decided before any connection; real peers run on loopback only."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from emprops.netguard import (
    UnsafeURL,
    is_public_address,
    safe_async_client,
    safe_client,
    vet_url,
)

pytestmark = pytest.mark.timeout(30)

# Documentation-only addresses are "reserved"; these look public to the guard and are never
# contacted (vet_url only resolves, through the injected resolver).
PUBLIC_A = "93.184.215.14"
PUBLIC_B = "2606:2800:21f:cb07:6820:80da:af6b:8b2c"


def resolver_for(mapping: dict[str, list[str]]):  # type: ignore[no-untyped-def]
    def resolve(host: str, port: int) -> list[str]:
        try:
            return mapping[host]
        except KeyError:
            raise OSError(f"no such host {host}") from None

    return resolve


def no_dns(host: str, port: int) -> list[str]:
    raise AssertionError(f"the guard resolved {host!r}, which it should have refused first")


# --- vet_url -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1/", "loopback"),
        ("http://127.8.9.10:8080/x", "loopback"),
        ("http://10.0.0.5/", "private"),
        ("http://192.168.1.1/", "private"),
        ("http://172.16.0.1/", "private"),
        ("http://169.254.169.254/latest/meta-data", "cloud metadata"),
        ("http://169.254.1.1/", "link-local"),
        ("http://100.100.100.200/", "cloud metadata"),
        ("http://100.64.0.1/", "shared (carrier-grade NAT)"),
        ("http://224.0.0.251/", "multicast"),
        ("http://0.0.0.0/", "unspecified"),
        ("http://[::1]/", "loopback"),
        ("http://[::]/", "unspecified"),
        ("http://[fe80::1]/", "link-local"),
        ("http://[fd00:ec2::254]/", "cloud metadata"),
        ("http://[fc00::5]/", "private"),
        ("http://[ff02::1]/", "multicast"),
        ("http://[::ffff:127.0.0.1]/", "IPv4-mapped loopback"),
        ("http://[::ffff:10.1.2.3]/", "IPv4-mapped private"),
        ("http://[::ffff:169.254.169.254]/", "IPv4-mapped cloud metadata"),
        ("http://2130706433/", "loopback"),
        ("http://0x7f.1/", "loopback"),
        ("http://017700000001/", "loopback"),
        ("http://127.1/", "loopback"),
        ("http://0/", "unspecified"),
        ("https://0xa9fea9fe/", "cloud metadata"),
    ],
)
def test_literal_non_public_addresses_are_refused_without_dns(url: str, reason: str) -> None:
    with pytest.raises(UnsafeURL) as refused:
        vet_url(url, resolver=no_dns)

    assert refused.value.reason == f"non-public address ({reason})"


@pytest.mark.parametrize(
    "url", ["http://localhost/", "http://LOCALHOST.:8000/", "http://a.localhost/"]
)
def test_localhost_names_are_refused(url: str) -> None:
    with pytest.raises(UnsafeURL, match="loopback name"):
        vet_url(url, resolver=no_dns)


def test_localhost_is_refused_with_the_system_resolver_too() -> None:
    # /etc/hosts answers for localhost: no query leaves the machine.
    with pytest.raises(UnsafeURL):
        vet_url("http://localhost:8080/")


@pytest.mark.parametrize("address", ["127.0.0.1", "10.1.2.3", "::1", "169.254.169.254"])
def test_a_name_resolving_to_a_non_public_address_is_refused(address: str) -> None:
    resolver = resolver_for({"innocent.test": [address]})

    with pytest.raises(UnsafeURL, match="non-public address"):
        vet_url("https://innocent.test/path", resolver=resolver)


def test_any_non_public_address_among_the_answers_is_refused() -> None:
    resolver = resolver_for({"mixed.test": [PUBLIC_A, "10.0.0.1"]})

    with pytest.raises(UnsafeURL) as refused:
        vet_url("http://mixed.test/", resolver=resolver)

    assert refused.value.reason == "non-public address (private)"


def test_a_public_name_is_vetted_with_all_its_addresses() -> None:
    resolver = resolver_for({"public.test": [PUBLIC_A, PUBLIC_B, PUBLIC_A]})

    assert vet_url("https://public.test:8443/a?b=1", resolver=resolver) == (
        "public.test",
        [PUBLIC_A, PUBLIC_B],
    )


@pytest.mark.parametrize(
    "url",
    ["file:///etc/passwd", "gopher://example.test/", "ftp://example.test/", "dict://x:11211/"],
)
def test_only_http_and_https_are_allowed(url: str) -> None:
    with pytest.raises(UnsafeURL, match="is not allowed"):
        vet_url(url, resolver=no_dns)


@pytest.mark.parametrize("url", ["http:///path", "http://", "not a url"])
def test_a_url_without_host_is_refused(url: str) -> None:
    with pytest.raises(UnsafeURL):
        vet_url(url, resolver=no_dns)


def test_percent_encoded_hosts_and_zone_ids_are_refused() -> None:
    for url in ["http://127.0.0.%31/", "http://[fe80::1%25eth0]/"]:
        with pytest.raises(UnsafeURL, match="not valid"):
            vet_url(url, resolver=no_dns)


def test_the_refusal_message_never_carries_credentials_or_query() -> None:
    with pytest.raises(UnsafeURL) as refused:
        vet_url("http://alice:s3cret@10.0.0.5/x?token=t0k3n", resolver=no_dns)

    message = str(refused.value)
    assert "s3cret" not in message
    assert "t0k3n" not in message
    assert "alice" not in message
    assert message == "refused '10.0.0.5': non-public address (private)"


def test_an_unresolvable_host_is_refused() -> None:
    with pytest.raises(UnsafeURL, match="does not resolve"):
        vet_url("http://nowhere.test/", resolver=resolver_for({}))


def test_allow_listed_hosts_are_trusted_by_host_or_host_and_port() -> None:
    resolver = resolver_for({"comfy.internal": ["10.0.0.7"]})

    assert vet_url(
        "http://comfy.internal:8188/", allow_hosts=["comfy.internal"], resolver=resolver
    ) == (
        "comfy.internal",
        ["10.0.0.7"],
    )
    assert vet_url(
        "http://comfy.internal:8188/", allow_hosts=["COMFY.internal:8188"], resolver=resolver
    ) == ("comfy.internal", ["10.0.0.7"])
    assert vet_url("http://[::1]:81/", allow_hosts=["[::1]:81"], resolver=no_dns) == (
        "::1",
        ["::1"],
    )
    with pytest.raises(UnsafeURL):
        vet_url(
            "http://comfy.internal:9999/", allow_hosts=["comfy.internal:8188"], resolver=resolver
        )


def test_is_public_address() -> None:
    assert is_public_address(PUBLIC_A)
    assert is_public_address(PUBLIC_B)
    assert not is_public_address("127.0.0.1")
    assert not is_public_address("::ffff:10.0.0.1")
    assert not is_public_address("not-an-ip")


# --- the clients, against real loopback peers --------------------------------------------------


class Peer:
    """An HTTP server on 127.0.0.1 that records what it receives."""

    def __init__(self, respond) -> None:  # type: ignore[no-untyped-def]
        self.requests: list[tuple[str, dict[str, str]]] = []
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                peer.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                status, headers, body = respond(self.path)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def secret_peer() -> Iterator[Peer]:
    peer = Peer(lambda path: (200, {}, b"the crown jewels"))
    yield peer
    peer.close()


@pytest.fixture
def redirecting_peer(secret_peer: Peer) -> Iterator[Peer]:
    target = f"http://127.0.0.1:{secret_peer.port}/secret"
    peer = Peer(lambda path: (302, {"Location": target}, b""))
    yield peer
    peer.close()


def test_a_direct_request_to_loopback_is_refused_before_connecting(secret_peer: Peer) -> None:
    with safe_client() as client, pytest.raises(UnsafeURL):
        client.get(f"http://127.0.0.1:{secret_peer.port}/secret")

    assert secret_peer.requests == []


def test_a_redirect_to_loopback_is_refused_and_never_reaches_it(
    redirecting_peer: Peer, secret_peer: Peer
) -> None:
    allow = [f"127.0.0.1:{redirecting_peer.port}"]  # the first hop only

    with safe_client(allow_hosts=allow) as client, pytest.raises(UnsafeURL) as refused:
        client.get(f"http://127.0.0.1:{redirecting_peer.port}/start")

    assert refused.value.reason == "non-public address (loopback)"
    assert [path for path, _ in redirecting_peer.requests] == ["/start"]
    assert secret_peer.requests == []


def test_an_allow_listed_peer_is_reached_with_its_host_header(secret_peer: Peer) -> None:
    with safe_client(allow_hosts=[f"127.0.0.1:{secret_peer.port}"]) as client:
        response = client.get(f"http://127.0.0.1:{secret_peer.port}/secret?x=1")

    assert response.status_code == 200
    assert response.text == "the crown jewels"
    assert secret_peer.requests[0][0] == "/secret?x=1"
    assert secret_peer.requests[0][1]["host"] == f"127.0.0.1:{secret_peer.port}"


def test_the_client_connects_to_the_vetted_address_and_keeps_the_name(secret_peer: Peer) -> None:
    # allowed.test exists only in this resolver; reaching the peer proves the connection went to
    # the address the guard resolved (the system resolver would not know the name at all).
    calls: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        calls.append(host)
        return {"allowed.test": ["127.0.0.1"]}[host]

    with safe_client(allow_hosts=["allowed.test"], resolver=resolver) as client:
        response = client.get(f"http://allowed.test:{secret_peer.port}/secret")

    assert response.status_code == 200
    assert response.url == f"http://allowed.test:{secret_peer.port}/secret"
    assert calls == ["allowed.test"]
    assert secret_peer.requests[0][1]["host"] == f"allowed.test:{secret_peer.port}"


def test_a_redirect_from_an_allowed_name_to_a_name_resolving_to_loopback_is_refused(
    secret_peer: Peer,
) -> None:
    hop = Peer(
        lambda path: (302, {"Location": f"http://rebind.test:{secret_peer.port}/secret"}, b"")
    )
    resolver = resolver_for({"allowed.test": ["127.0.0.1"], "rebind.test": ["127.0.0.1"]})
    try:
        with safe_client(allow_hosts=["allowed.test"], resolver=resolver) as client:
            with pytest.raises(UnsafeURL, match="rebind.test"):
                client.get(f"http://allowed.test:{hop.port}/start")
    finally:
        hop.close()

    assert len(hop.requests) == 1
    assert secret_peer.requests == []


def test_an_unresolvable_host_is_a_connect_error() -> None:
    with safe_client(resolver=resolver_for({})) as client, pytest.raises(httpx.ConnectError):
        client.get("http://nowhere.test/")


def test_refused_schemes_never_reach_a_transport() -> None:
    with safe_client() as client, pytest.raises((UnsafeURL, httpx.UnsupportedProtocol)):
        client.get("file:///etc/passwd")


def test_the_async_client_guards_redirects_too(redirecting_peer: Peer, secret_peer: Peer) -> None:
    import asyncio

    async def fetch() -> None:
        allow = [f"127.0.0.1:{redirecting_peer.port}"]
        async with safe_async_client(allow_hosts=allow) as client:
            with pytest.raises(UnsafeURL):
                await client.get(f"http://127.0.0.1:{redirecting_peer.port}/start")
        async with safe_async_client(allow_hosts=[f"127.0.0.1:{secret_peer.port}"]) as client:
            response = await client.get(f"http://127.0.0.1:{secret_peer.port}/ok")
            assert response.text == "the crown jewels"

    asyncio.run(fetch())

    assert [path for path, _ in secret_peer.requests] == ["/ok"]
