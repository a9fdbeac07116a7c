"""The SSRF guard's decision (emprops/netguard.py `vet_url`) on the spellings attackers use for
loopback, the cloud metadata address and private ranges. tests/emprops/test_netguard.py covers
the canonical forms and the clients; these are the other encodings of the same addresses. Each is
refused before any name is resolved, so no request (not even a DNS query) leaves."""

from __future__ import annotations

import pytest

from emprops.netguard import UnsafeURL, vet_url

pytestmark = pytest.mark.timeout(30)


def no_dns(host: str, port: int) -> list[str]:
    raise AssertionError(f"the guard resolved {host!r}, which it should have refused first")


LOOPBACK = [
    "http://0177.0.0.1/",  # octal dotted
    "http://0x7f000001/",  # hex integer
    "http://0x7f.0x0.0x0.0x1/",  # hex dotted
    "http://127.000.000.001/",  # zero-padded
    "http://00000177.0.0.1/",
    "http://[::ffff:7f00:1]/",  # IPv4-mapped, hex tail
    "http://[0:0:0:0:0:ffff:127.0.0.1]/",  # IPv4-mapped, long form
    "http://[::ffff:127.0.0.1]:8080/",
    "http://[::127.0.0.1]/",  # IPv4-compatible (deprecated, reserved)
    "http://[::ffff:0:127.0.0.1]/",  # SIIT
    "http://[64:ff9b::7f00:1]/",  # NAT64 of 127.0.0.1
    "http://[2002:7f00:1::]/",  # 6to4 of 127.0.0.1
    "http://127\u30020\u30020\u30021/",  # ideographic full stops
    "http://evil.test\\@127.0.0.1/",  # backslash before the userinfo marker
]
METADATA = [
    "http://169.254.169.254/",
    "http://2852039166/",  # decimal
    "http://0xa9fea9fe/",  # hex integer
    "http://0xa9.0xfe.0xa9.0xfe/",  # hex dotted
    "http://0251.0376.0251.0376/",  # octal dotted
    "http://0251.254.169.254/",  # mixed octal
    "http://169.254.43518/",  # two-part form
    "http://[::ffff:169.254.169.254]/",
    "http://[::ffff:a9fe:a9fe]/",
    "http://[64:ff9b::a9fe:a9fe]/",  # NAT64
    "http://[2002:a9fe:a9fe::]/",  # 6to4
    "http://[fd00:ec2::254]/",  # AWS's IPv6 metadata endpoint
]
UNSPECIFIED_AND_PRIVATE = [
    "http://0.0.0.0/",
    "http://0x0/",
    "http://[::]/",
    "http://10.1/",  # two-part private
    "http://0xc0a80001/",  # 192.168.0.1
    "http://0300.0250.0.1/",  # 192.168.0.1 octal
    "http://172.31.255.255/",
    "http://[::ffff:192.168.0.1]/",
    "http://[fd00::1]/",
    "http://100.64.0.1/",
]


@pytest.mark.parametrize("url", LOOPBACK + METADATA + UNSPECIFIED_AND_PRIVATE)
def test_every_spelling_of_a_non_public_address_is_refused_without_dns(url: str) -> None:
    with pytest.raises(UnsafeURL):
        vet_url(url, resolver=no_dns)


@pytest.mark.parametrize("url", METADATA)
def test_metadata_spellings_are_refused_as_metadata_or_as_malformed(url: str) -> None:
    # every literal that decodes to the metadata address is named as such; the forms that
    # no URL parser reads as an address (leading-zero octal) are refused as not valid
    with pytest.raises(UnsafeURL) as refused:
        vet_url(url, resolver=no_dns)

    assert refused.value.reason in {"non-public address (cloud metadata)",
                                    "non-public address (IPv4-mapped cloud metadata)",
                                    "not a valid URL"}


@pytest.mark.parametrize("url", ["http://localhost/", "http://LocalHost./",
                                 "http://api.localhost:8000/", "https://localhost.:443/"])
def test_loopback_names_are_refused_without_dns(url: str) -> None:
    with pytest.raises(UnsafeURL, match="loopback name"):
        vet_url(url, resolver=no_dns)


@pytest.mark.parametrize(("host", "answer"), [
    ("loopback.example.test", "127.0.0.1"),
    ("127.0.0.1.", "127.0.0.1"),  # a trailing dot makes a literal a name
    ("metadata.example.test", "169.254.169.254"),
    ("v6.example.test", "::1"),
    ("mapped.example.test", "::ffff:127.0.0.1"),
    ("wildcard.example.test", "0.0.0.0"),
])
def test_a_name_resolving_to_a_non_public_address_is_refused(host: str, answer: str) -> None:
    asked: list[str] = []

    def resolve(name: str, port: int) -> list[str]:
        asked.append(name)
        return [answer]

    with pytest.raises(UnsafeURL, match="non-public address"):
        vet_url(f"http://{host}/", resolver=resolve)
    assert asked == [host.rstrip(".")]  # the guard drops a root label's trailing dot


def test_userinfo_does_not_change_which_host_is_vetted() -> None:
    # `http://127.0.0.1:80@evil.test/` names evil.test (the part before @ is userinfo): the
    # guard vets evil.test's own addresses, and refuses when they are loopback
    with pytest.raises(UnsafeURL, match="non-public address"):
        vet_url("http://127.0.0.1:80@evil.test/",
                resolver=lambda host, port: {"evil.test": ["127.0.0.1"]}[host])
