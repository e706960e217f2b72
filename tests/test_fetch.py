"""SSRF battery: every refused URL is answered 4xx and opens no connection at all."""

import asyncio
import ipaddress
import socket
import ssl

import aiohttp
import pytest
import trustme
from aiohttp import web

from nsfwoid.errors import InvalidUrl, UrlNotAllowed
from nsfwoid.fetch.addresses import is_public_address
from nsfwoid.fetch.download import checked_url, host_allowed

from . import helpers, images, processes, reference, upstreams


class Recorder:
    """Local listeners that count every connection made to them and answer with a tiny image redirect."""

    def __init__(self):
        self.connections = 0
        self.servers = []
        self.port = None

    async def start(self):
        async def accept(reader, writer):
            self.connections += 1
            writer.close()

        server = await asyncio.start_server(accept, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self.servers.append(server)
        try:
            self.servers.append(await asyncio.start_server(accept, "::1", self.port))
            self.ipv6 = True
        except OSError:
            self.ipv6 = False
        return self

    def close(self):
        for server in self.servers:
            server.close()


@pytest.fixture
async def recorder():
    rec = await Recorder().start()
    yield rec
    rec.close()


@pytest.fixture
async def forward_proxy():
    proxy = await upstreams.ForwardProxy().start()
    yield proxy
    proxy.close()


@pytest.fixture
async def guarded(make_client):
    """The service with its production address guard and an allowlist open to every host."""
    return await make_client(allowed_hosts=("*",), allow_private_addresses=False)


REFUSED_403 = [
    "http://localhost:{port}/a.jpg",  # a name that resolves to loopback
    "http://127.0.0.1:{port}/a.jpg",
    "http://[::1]:{port}/a.jpg",
    "http://[::ffff:127.0.0.1]:{port}/a.jpg",
    "http://[::ffff:7f00:1]:{port}/a.jpg",
    "http://user:pass@localhost:{port}/a.jpg",
    "http://upload.wikimedia.org@127.0.0.1:{port}/a.jpg",
]
REFUSED_400 = [
    "http://2130706433:{port}/a.jpg",
    "http://0x7f000001:{port}/a.jpg",
    "http://0177.0.0.1:{port}/a.jpg",
    "http://127.1:{port}/a.jpg",
    "http://0x7f.1:{port}/a.jpg",
    "http://017700000001:{port}/a.jpg",
]


@pytest.mark.parametrize("template", REFUSED_403)
async def test_guard_refuses_without_connecting(guarded, recorder, template):
    url = template.format(port=recorder.port)
    await helpers.problem_of(await guarded.post("/", data={"url": url}), 403, "url-not-allowed")
    assert recorder.connections == 0


@pytest.mark.parametrize("template", [t for t in REFUSED_403 if "@" not in t])
async def test_a_refused_address_names_the_setting_that_allows_it(guarded, recorder, template):
    """As the refusal of a host off the allowlist names NSFWOID_ALLOWED_HOSTS."""
    url = template.format(port=recorder.port)
    problem = await helpers.problem_of(await guarded.post("/", data={"url": url}), 403, "url-not-allowed")
    assert "non-public address" in problem["detail"] and "NSFWOID_ALLOW_PRIVATE_ADDRESSES" in problem["detail"]


@pytest.mark.parametrize("template", REFUSED_400)
async def test_numeric_ipv4_spellings_are_refused(guarded, recorder, template):
    url = template.format(port=recorder.port)
    await helpers.problem_of(await guarded.post("/", data={"url": url}), 400, "invalid-url")
    assert recorder.connections == 0


async def test_redirect_to_a_host_off_the_allowlist(make_client, upstream, recorder):
    client = await make_client(allowed_hosts=("localhost",), allow_private_addresses=True)
    target = f"http://127.0.0.1:{recorder.port}/a.jpg"
    url = f"http://localhost:{upstream.port}/redirect-to?target={target}"
    await helpers.problem_of(await client.post("/", data={"url": url}), 403, "url-not-allowed")
    assert recorder.connections == 0


async def test_redirect_to_a_private_address_is_refused_at_connect(guarded, recorder, upstream):
    # The first hop itself is loopback, so the guard must stop it before any redirect is even read.
    url = str(upstream.make_url("/redirect-to").with_query(target=f"http://127.0.0.1:{recorder.port}/"))
    await helpers.problem_of(await guarded.post("/", data={"url": url}), 403, "url-not-allowed")
    assert recorder.connections == 0


async def test_redirect_with_userinfo_is_refused(make_client, upstream, recorder):
    client = await make_client(allowed_hosts=("127.0.0.1",), allow_private_addresses=True)
    target = f"http://a:b@127.0.0.1:{recorder.port}/x"
    url = str(upstream.make_url("/redirect-to").with_query(target=target))
    await helpers.problem_of(await client.post("/", data={"url": url}), 403, "url-not-allowed")
    assert recorder.connections == 0


async def test_three_redirects_followed_four_refused(client, upstream):
    ok = await client.post("/", data={"url": str(upstream.make_url("/redirect/3"))})
    assert ok.status == 200
    await helpers.problem_of(await client.post("/", data={"url": str(upstream.make_url("/redirect/4"))}), 502,
                     "upstream-error")


async def test_huge_declared_length_is_refused_before_reading(make_client, upstream):
    client = await make_client(max_image_bytes=1_000_000)
    await helpers.problem_of(await client.post("/", data={"url": str(upstream.make_url("/huge-length"))}), 413,
                     "payload-too-large")


async def test_endless_body_is_cut_at_the_cap(make_client, upstream):
    client = await make_client(max_image_bytes=1_000_000)
    await helpers.problem_of(await client.post("/", data={"url": str(upstream.make_url("/endless"))}), 413,
                     "payload-too-large")
    assert (await client.get("/healthz")).status == 200


async def test_request_body_declared_too_large(make_client):
    client = await make_client(max_image_bytes=1000)
    response = await client.post("/", data=b"\0" * 5000, headers={"Content-Type": "image/jpeg"})
    await helpers.problem_of(response, 413, "payload-too-large")


# Each block of IANA's special-purpose registries that is not globally reachable, with one address in it.
NOT_GLOBAL = {
    "0.0.0.0/8 this network": "0.1.2.3", "10.0.0.0/8 private": "10.1.2.3", "100.64.0.0/10 shared": "100.64.0.1",
    "127.0.0.0/8 loopback": "127.0.0.1", "169.254.0.0/16 link-local": "169.254.169.254",
    "172.16.0.0/12 private": "172.16.0.1", "192.0.0.0/24 IETF": "192.0.0.100", "192.0.0.8 dummy": "192.0.0.8",
    "192.0.0.170 NAT64 discovery": "192.0.0.170", "192.0.2.0/24 TEST-NET-1": "192.0.2.1",
    "192.88.99.0/24 6to4 relay": "192.88.99.1", "192.168.0.0/16 private": "192.168.1.1",
    "198.18.0.0/15 benchmarking": "198.18.0.1", "198.51.100.0/24 TEST-NET-2": "198.51.100.7",
    "203.0.113.0/24 TEST-NET-3": "203.0.113.9", "224.0.0.0/4 multicast": "239.255.255.250",
    "240.0.0.0/4 reserved": "240.0.0.1", "255.255.255.255 broadcast": "255.255.255.255",
    "::1 loopback": "::1", ":: unspecified": "::", "::ffff:0:0/96 mapped": "::ffff:8.8.8.8",
    "64:ff9b:1::/48 local translation": "64:ff9b:1::808:808", "100::/64 discard": "100::1",
    "100:0:0:1::/64 dummy": "100:0:0:1::1", "2001::/23 IETF": "2001:2::1", "2001::/32 Teredo": "2001:0:4136:e378::1",
    "2001:db8::/32 documentation": "2001:db8::1", "3fff::/20 documentation": "3fff::1",
    "5f00::/16 SRv6": "5f00::1", "fc00::/7 unique local": "fd12:3456::1", "fe80::/10 link-local": "fe80::1",
    "fec0::/10 site-local": "fec0::1", "ff00::/8 multicast": "ff02::1",
    "6to4 of 127.0.0.1": "2002:7f00:1::", "6to4 of 192.0.0.8": "2002:c000:8::1",
    "2002::/16 6to4, even of a public address": "2002:808:808::1",
    "NAT64 of 10.0.0.1": "64:ff9b::a00:1", "NAT64 of 192.0.0.100": "64:ff9b::c000:64",
    "mapped 169.254.169.254": "::ffff:169.254.169.254",
}


@pytest.mark.parametrize("address", list(NOT_GLOBAL.values()), ids=list(NOT_GLOBAL))
def test_non_public_addresses(address):
    assert not is_public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", [
    "208.80.154.240", "8.8.8.8", "2620:0:861:ed1a::1", "2606:4700::1111",
    "192.31.196.1",  # AS112, globally reachable
    "2001:4:112::1", "2001:20::1",  # globally reachable exceptions inside 2001::/23
])
def test_public_addresses(address):
    assert is_public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("host, allowed", [
    ("upload.wikimedia.org", True), ("UPLOAD.wikimedia.org", True), ("upload.wikimedia.org.", True),
    ("wikimedia.org", False), ("evilupload.wikimedia.org", False), ("upload.wikimedia.org.evil.com", False),
])
def test_default_allowlist(host, allowed):
    assert host_allowed(host, ("upload.wikimedia.org",)) is allowed


def test_suffix_patterns():
    patterns = ("*.wikimedia.org",)
    assert host_allowed("upload.wikimedia.org", patterns)
    assert host_allowed("a.b.wikimedia.org", patterns)
    assert not host_allowed("wikimedia.org.evil.com", patterns)
    assert not host_allowed("evilwikimedia.org", patterns)


@pytest.mark.parametrize("url, error", [
    ("https://user@upload.wikimedia.org/a.jpg", UrlNotAllowed),
    ("https://:pw@upload.wikimedia.org/a.jpg", UrlNotAllowed),
    ("gopher://upload.wikimedia.org/", InvalidUrl),
    ("https:///a.jpg", InvalidUrl),
])
def test_checked_url(url, error):
    with pytest.raises(error):
        checked_url(url, ("upload.wikimedia.org",))


def test_checked_url_accepts_commons():
    url = checked_url("https://upload.wikimedia.org/wikipedia/commons/a/a9/Example.jpg", ("upload.wikimedia.org",))
    assert url.host == "upload.wikimedia.org"


def test_localhost_resolves_to_loopback_here():
    # The battery's "name resolving to loopback" case relies on this.
    addresses = {info[4][0] for info in socket.getaddrinfo("localhost", 80)}
    assert addresses and all(ipaddress.ip_address(a).is_loopback for a in addresses)


async def test_through_a_proxy_it_connects_and_the_allowlist_still_applies(make_client, upstream, forward_proxy,
                                                                       recorder):
    """NSFWOID_HTTP_PROXY, for a cluster whose pods reach image hosts only through an egress proxy: downloads go
    through it, and it, not the service, vets the addresses it connects to (here a loopback image host, which the
    guard alone refuses). The allowlist is still checked before the proxy is asked, on every hop."""
    image = str(upstream.make_url("/image/brick.jpg"))
    direct = await make_client(allow_private_addresses=False)
    await helpers.problem_of(await direct.post("/", data={"url": image}), 403, "url-not-allowed")

    client = await make_client(allow_private_addresses=False, http_proxy=forward_proxy.url)
    response = await client.post("/", data={"url": image}, headers={"Accept": "application/json"})
    assert response.status == 200, await response.text()
    assert (await response.json())["score"] == pytest.approx(reference.expected_scores()["brick.jpg"], abs=0.005)
    assert forward_proxy.requests == [image]

    off_the_list = f"http://[::1]:{recorder.port}/a.jpg"
    redirect = str(upstream.make_url("/redirect-to").with_query(target=off_the_list))
    for url in (off_the_list, redirect):
        await helpers.problem_of(await client.post("/", data={"url": url}), 403, "url-not-allowed")
    assert forward_proxy.requests == [image, redirect]
    assert recorder.connections == 0


@pytest.mark.processes
async def test_https_images_are_tunnelled_through_the_proxy_and_their_certificates_checked(aiohttp_server,
                                                                                          forward_proxy, tmp_path):
    """Image hosts speak https (upload.wikimedia.org does). Through NSFWOID_HTTP_PROXY the service asks the proxy for
    a CONNECT tunnel and checks the host's certificate itself, against the system's CAs (SSL_CERT_FILE here, read
    as a process starts: so a service process)."""
    trusted_ca, other_ca = trustme.CA(), trustme.CA()
    ca_file = tmp_path / "ca.pem"
    trusted_ca.cert_pem.write_to_path(str(ca_file))
    brick = (images.FIDELITY / "brick.jpg").read_bytes()

    async def send_brick(_):
        return web.Response(body=brick, content_type="image/jpeg")

    async def image_host(ca: trustme.CA):
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("localhost").configure_cert(context)
        app = web.Application()
        app.router.add_get("/brick.jpg", send_brick)
        return await aiohttp_server(app, ssl=context)

    trusted, untrusted = await image_host(trusted_ca), await image_host(other_ca)
    service, base = await asyncio.to_thread(
        processes.start_service, NSFWOID_HTTP_PROXY=forward_proxy.url, NSFWOID_ALLOWED_HOSTS="localhost",
        SSL_CERT_FILE=str(ca_file))
    try:
        async with aiohttp.ClientSession(base) as session:
            url = f"https://localhost:{trusted.port}/brick.jpg"
            async with session.post("/", data={"url": url}, headers={"Accept": "application/json"}) as response:
                assert response.status == 200, await response.text()
                score = (await response.json())["score"]
            assert score == pytest.approx(reference.expected_scores()["brick.jpg"], abs=0.005)
            assert forward_proxy.requests == [f"localhost:{trusted.port}"]

            url = f"https://localhost:{untrusted.port}/brick.jpg"
            async with session.post("/", data={"url": url}) as response:
                body = await helpers.problem_of(response, 502, "upstream-error")
            assert "CERTIFICATE_VERIFY_FAILED" in body["detail"]
            assert forward_proxy.requests == [f"localhost:{trusted.port}", f"localhost:{untrusted.port}"]
    finally:
        service.terminate()
        await asyncio.to_thread(service.wait, 30)
