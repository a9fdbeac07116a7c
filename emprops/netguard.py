"""The SSRF guard for requests to URLs that users supply (SPEC section 4).

A URL is vetted after DNS: http(s) only, and every address its host resolves to must be public
(not loopback, private, link-local, multicast, reserved, unspecified, shared 100.64/10 or a cloud
metadata address, also when written as IPv4-mapped IPv6 or as a legacy decimal/octal/hex IPv4
literal). The HTTP clients built here vet every request, redirects included, and connect to the
address that was vetted (with the original Host header and TLS SNI/certificate name), so a DNS
answer that changes between the check and the connection cannot redirect them. Hosts on the
staff allow-list (and staff-registered servers) are trusted as they are.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections import OrderedDict
from collections.abc import Callable, Collection
from typing import Any, Generic, TypeVar

import httpx

Resolver = Callable[[str, int], list[str]]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_SCHEMES = {"http": 80, "https": 443}
_METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(address)
    for address in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, ...
        "169.254.170.2",  # AWS ECS task metadata
        "fd00:ec2::254",  # AWS IPv6
        "100.100.100.200",  # Alibaba Cloud
    )
)
_SHARED_ADDRESS_SPACE = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# inet_aton's forms: 1 to 4 parts, each decimal, octal (leading 0) or hex (0x).
_LEGACY_IPV4 = re.compile(r"^(?:0x[0-9a-f]*|[0-9]+)(?:\.(?:0x[0-9a-f]*|[0-9]+)){0,3}$")
_HOSTNAME = re.compile(r"^[a-z0-9_](?:[a-z0-9_.-]*[a-z0-9_])?\.?$")
# Inner transports are kept per vetted (host, address): bounded so a client that visits many
# hosts does not keep a pool open for each.
_MAX_POOLS = 32
_MAX_ADDRESSES_TRIED = 3


class UnsafeURL(Exception):
    """The URL may not be fetched; the message names the host and the reason, nothing else."""

    def __init__(self, reason: str, *, host: str = "") -> None:
        super().__init__(f"refused {host!r}: {reason}" if host else f"refused: {reason}")
        self.reason = reason
        self.host = host


class UnresolvableHost(UnsafeURL):
    """The host did not resolve. The clients report this as httpx.ConnectError instead."""


def vet_url(
    url: str,
    *,
    allow_hosts: Collection[str] = (),
    resolver: Resolver | None = None,
) -> tuple[str, list[str]]:
    """(host, addresses to connect to) for a URL that may be fetched, or raise UnsafeURL.

    `allow_hosts` holds trusted `host` or `host:port` entries, whose addresses are not checked.
    `resolver(host, port)` returns address strings (default: socket.getaddrinfo).
    """
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        raise UnsafeURL("not a valid URL") from None
    scheme = parsed.scheme
    if scheme not in _SCHEMES:
        raise UnsafeURL(f"scheme {scheme!r} is not allowed (http or https only)")
    host = parsed.raw_host.decode("ascii", "replace").lower()
    if not host:
        raise UnsafeURL("the URL has no host")
    port = parsed.port or _SCHEMES[scheme]
    return _vet_host(host, port, allow_hosts=allow_hosts, resolver=resolver)


def is_public_address(address: str) -> bool:
    """Whether an address may be connected to on behalf of a user."""
    try:
        return _refusal(ipaddress.ip_address(address)) is None
    except ValueError:
        return False


def safe_client(
    *,
    allow_hosts: Collection[str] = (),
    resolver: Resolver | None = None,
    timeout: float = 30.0,
    max_redirects: int = 5,
    **client_options: Any,
) -> httpx.Client:
    """An httpx.Client for user-supplied URLs: every request and redirect hop is vetted.

    Refusals raise UnsafeURL before any connection to the refused address; a host that does not
    resolve raises httpx.ConnectError. Extra keyword arguments go to httpx.Client (headers, ...).
    """
    return httpx.Client(
        transport=GuardedTransport(allow_hosts=allow_hosts, resolver=resolver),
        timeout=timeout,
        follow_redirects=True,
        max_redirects=max_redirects,
        trust_env=False,  # no proxies or .netrc from the environment: they bypass the guard
        **client_options,
    )


def safe_async_client(
    *,
    allow_hosts: Collection[str] = (),
    resolver: Resolver | None = None,
    timeout: float = 30.0,
    max_redirects: int = 5,
    **client_options: Any,
) -> httpx.AsyncClient:
    """The asyncio/trio twin of safe_client (DNS runs in a worker thread)."""
    return httpx.AsyncClient(
        transport=AsyncGuardedTransport(allow_hosts=allow_hosts, resolver=resolver),
        timeout=timeout,
        follow_redirects=True,
        max_redirects=max_redirects,
        trust_env=False,
        **client_options,
    )


_P = TypeVar("_P")


class _PoolCache(Generic[_P]):
    """Connection pools per (hostname, address), least recently used evicted past _MAX_POOLS."""

    def __init__(self, make: Callable[[], _P]) -> None:
        self._make = make
        self._pools: OrderedDict[tuple[str, str], _P] = OrderedDict()

    def get(self, host: str, address: str) -> tuple[_P, _P | None]:
        """The pool for (host, address), and a pool evicted to make room (for the caller to close)."""
        key = (host, address)
        pool = self._pools.get(key)
        if pool is not None:
            self._pools.move_to_end(key)
            return pool, None
        pool = self._pools[key] = self._make()
        evicted = self._pools.popitem(last=False)[1] if len(self._pools) > _MAX_POOLS else None
        return pool, evicted

    def drain(self) -> list[_P]:
        pools = list(self._pools.values())
        self._pools.clear()
        return pools


class GuardedTransport(httpx.BaseTransport):
    """Vets each request, then sends it to the vetted address through a per-host pool.

    Pools are per (hostname, address), not per address as httpcore would key them: two names on
    one address must not share a TLS connection made (and certificate-checked) for the other.
    """

    def __init__(
        self,
        *,
        allow_hosts: Collection[str] = (),
        resolver: Resolver | None = None,
        **transport_options: Any,
    ) -> None:
        self._allow_hosts = _normalise_allow_list(allow_hosts)
        self._resolver = resolver
        self._pools = _PoolCache(lambda: httpx.HTTPTransport(**transport_options))

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        host, addresses = _vet_for_transport(request, self._allow_hosts, self._resolver)
        last_error: httpx.ConnectError | None = None
        for address in addresses[:_MAX_ADDRESSES_TRIED]:
            try:
                return self._pool(host, address).handle_request(
                    _pinned_request(request, host, address)
                )
            except httpx.ConnectError as exc:  # nothing was sent; try the next vetted address
                last_error = exc
        assert last_error is not None
        raise last_error

    def _pool(self, host: str, address: str) -> httpx.HTTPTransport:
        pool, evicted = self._pools.get(host, address)
        if evicted is not None:
            evicted.close()
        return pool

    def close(self) -> None:
        for pool in self._pools.drain():
            pool.close()


class AsyncGuardedTransport(httpx.AsyncBaseTransport):
    """GuardedTransport for httpx.AsyncClient."""

    def __init__(
        self,
        *,
        allow_hosts: Collection[str] = (),
        resolver: Resolver | None = None,
        **transport_options: Any,
    ) -> None:
        self._allow_hosts = _normalise_allow_list(allow_hosts)
        self._resolver = resolver
        self._pools = _PoolCache(lambda: httpx.AsyncHTTPTransport(**transport_options))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        import anyio.to_thread

        host, addresses = await anyio.to_thread.run_sync(
            _vet_for_transport, request, self._allow_hosts, self._resolver
        )
        last_error: httpx.ConnectError | None = None
        for address in addresses[:_MAX_ADDRESSES_TRIED]:
            try:
                return await self._pool(host, address).handle_async_request(
                    _pinned_request(request, host, address)
                )
            except httpx.ConnectError as exc:
                last_error = exc
        assert last_error is not None
        raise last_error

    def _pool(self, host: str, address: str) -> httpx.AsyncHTTPTransport:
        # closing an async pool needs an await: an evicted idle pool is just dropped, and its
        # sockets close when it is collected
        return self._pools.get(host, address)[0]

    async def aclose(self) -> None:
        for pool in self._pools.drain():
            await pool.aclose()


# --------------------------------------------------------------------------------------------


def _vet_host(
    host: str, port: int, *, allow_hosts: Collection[str], resolver: Resolver | None
) -> tuple[str, list[str]]:
    if "%" in host:  # percent-encoding or an IPv6 zone id: neither belongs in a fetched URL
        raise UnsafeURL("the host is not valid", host=host)
    trusted = _is_allowed(host, port, _normalise_allow_list(allow_hosts))
    literal = _ip_literal(host)
    if literal is not None:
        addresses = [literal]
    else:
        if not _HOSTNAME.match(host):
            raise UnsafeURL("the host is not valid", host=host)
        name = host.rstrip(".")
        if not trusted and (name == "localhost" or name.endswith(".localhost")):
            raise UnsafeURL("the host is a loopback name", host=host)
        addresses = _resolve(name, port, resolver)
    if not trusted:
        for address in addresses:
            try:
                reason = _refusal(ipaddress.ip_address(address))
            except ValueError:
                reason = "not an IP address"
            if reason is not None:
                # The address itself stays out of the message: it would turn the guard into
                # an oracle for internal DNS.
                raise UnsafeURL(f"non-public address ({reason})", host=host)
    return host, addresses


def _ip_literal(host: str) -> str | None:
    """The canonical address of an IP literal host, including legacy IPv4 forms, else None."""
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        pass
    if _LEGACY_IPV4.match(host):
        try:
            return socket.inet_ntoa(socket.inet_aton(host))
        except OSError:
            raise UnsafeURL("the host is not a valid address", host=host) from None
    return None


def _resolve(host: str, port: int, resolver: Resolver | None) -> list[str]:
    try:
        if resolver is not None:
            raw = list(resolver(host, port))
        else:
            raw = [
                str(info[4][0]) for info in socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
            ]
    except (OSError, UnicodeError):
        raise UnresolvableHost("the host does not resolve", host=host) from None
    addresses: list[str] = []
    for address in raw:
        address = address.split("%", 1)[0]  # a scope id; the address itself is what is vetted
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise UnresolvableHost("the host does not resolve", host=host)
    return addresses


def _refusal(ip: IPAddress) -> str | None:
    """Why an address is refused (a short category), or None for a public address."""
    if ip in _METADATA_ADDRESSES:
        return "cloud metadata"
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            inner = _refusal(embedded)
            if inner is not None:
                return f"IPv4-mapped {inner}"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED_ADDRESS_SPACE:
        return "shared (carrier-grade NAT)"
    if ip.is_private:
        return "private"
    if ip.is_reserved:
        return "reserved"
    if not ip.is_global:
        return "non-public"
    return None


def _normalise_allow_list(allow_hosts: Collection[str]) -> frozenset[str]:
    return frozenset(entry.strip().lower() for entry in allow_hosts if entry.strip())


def _is_allowed(host: str, port: int, allow_hosts: frozenset[str]) -> bool:
    if not allow_hosts:
        return False
    bare = host.rstrip(".")
    shown = f"[{bare}]" if ":" in bare else bare
    return bool({bare, shown, f"{shown}:{port}"} & allow_hosts)


def _vet_for_transport(
    request: httpx.Request, allow_hosts: frozenset[str], resolver: Resolver | None
) -> tuple[str, list[str]]:
    url = request.url
    if url.scheme not in _SCHEMES:
        raise UnsafeURL(f"scheme {url.scheme!r} is not allowed (http or https only)")
    host = url.raw_host.decode("ascii", "replace").lower()
    if not host:
        raise UnsafeURL("the URL has no host")
    try:
        return _vet_host(
            host,
            url.port or _SCHEMES[url.scheme],
            allow_hosts=allow_hosts,
            resolver=resolver,
        )
    except UnresolvableHost as exc:
        raise httpx.ConnectError(str(exc), request=request) from None


def _pinned_request(request: httpx.Request, host: str, address: str) -> httpx.Request:
    """The request aimed at `address`, still naming `host` in Host and in TLS."""
    pinned = httpx.Request(
        request.method,
        request.url.copy_with(host=address),
        headers=request.headers,  # carries the original Host header
        stream=request.stream,
        extensions={**request.extensions, "sni_hostname": host.rstrip(".")},
    )
    return pinned
