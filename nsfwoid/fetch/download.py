"""The safe downloader: host allowlist, the connect-time address guard (addresses.py), re-checked redirects,
caps, timeouts."""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import ipaddress
import re
from collections.abc import Callable

import aiohttp
from yarl import URL

from .. import HOME, NAME, metrics, package_version
from ..config import Settings
from ..errors import (
    InvalidUrl,
    UpstreamBusy,
    UpstreamError,
    UpstreamNotFound,
    UpstreamTimeout,
    UrlNotAllowed,
    check_size,
)
from .addresses import BlockedAddress, guarded_socket

MAX_REDIRECTS = 3
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
GONE_STATUSES = frozenset({404, 410})
# Wikimedia's User-Agent policy: client/version (contact) library/version.
USER_AGENT = f"{NAME}/{package_version()} ({HOME}) aiohttp/{aiohttp.__version__}"
BUSY_STATUSES = frozenset({429, 503})
# Hosts made of digits, dots and hex that are not a canonical dotted quad: 2130706433, 0x7f000001,
# 0177.0.0.1, 127.1. The C resolver reads them as IPv4 addresses; we refuse them outright.
NUMERIC_HOST = re.compile(r"^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+))*\.?$", re.IGNORECASE)
CHUNK_BYTES = 64 * 1024


def host_allowed(host: str, allowed_hosts: tuple[str, ...]) -> bool:
    host = host.lower().rstrip(".")
    for pattern in allowed_hosts:
        pattern = pattern.lower()
        if pattern == "*" or pattern == host:
            return True
        if pattern.startswith("*.") and host.endswith(pattern[1:]):
            return True
    return False


def checked_url(raw: str | URL, allowed_hosts: tuple[str, ...]) -> URL:
    """Parse and vet a URL before any connection is made."""
    try:
        url = raw if isinstance(raw, URL) else URL(raw.strip())
        host = url.raw_host
    except (ValueError, TypeError) as exc:
        raise InvalidUrl(f"cannot parse the URL: {exc}") from None
    if not url.is_absolute() or url.scheme not in ("http", "https") or not host:
        raise InvalidUrl("give an absolute http or https URL")
    if url.user is not None or url.password is not None:
        raise UrlNotAllowed("URLs with user information are refused")
    if NUMERIC_HOST.match(host) and not _is_dotted_quad(host):
        raise InvalidUrl(f"{host!r} is not a canonical IP address or host name")
    if not host_allowed(host, allowed_hosts):
        raise UrlNotAllowed(f"host {host!r} is not in NSFWOID_ALLOWED_HOSTS")
    return url


def _is_dotted_quad(host: str) -> bool:
    try:
        return str(ipaddress.IPv4Address(host)) == host
    except ValueError:
        return False


def create_session(settings: Settings, *, connections: int | None = None, per_host: int = 0) -> aiohttp.ClientSession:
    """The one shared ClientSession. `per_host`: at most that many downloads at once from one host (0: no cap).

    Through NSFWOID_HTTP_PROXY, the proxy connects to the image hosts, and it vets their addresses: the guard would
    only ever see the proxy's own.
    """
    guard = not (settings.allow_private_addresses or settings.http_proxy)
    connector = aiohttp.TCPConnector(
        limit=connections or settings.max_inflight,
        limit_per_host=per_host,
        socket_factory=guarded_socket if guard else None,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=settings.fetch_timeout),
        headers={"User-Agent": USER_AGENT},
        proxy=settings.http_proxy or None,
        trust_env=False,
    )


async def fetch(session: aiohttp.ClientSession, raw_url: str, settings: Settings,
                hold: Callable[[int | None], None] | None = None) -> bytes:
    """Download an image under every limit, following at most MAX_REDIRECTS re-checked redirects.

    `hold`, when given, is called once the answer's headers have come and its declared length is within the
    cap, before its body is read, with that length (None: none declared, or a compressed body, read
    decompressed); it may refuse by raising a Problem.
    """
    url = checked_url(raw_url, settings.allowed_hosts)
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        async with asyncio.timeout(settings.fetch_timeout):
            for _ in range(MAX_REDIRECTS + 1):
                async with session.get(url, allow_redirects=False) as response:
                    if response.status in REDIRECT_STATUSES:
                        url = _redirect_target(url, response, settings.allowed_hosts)
                        continue
                    if response.status in BUSY_STATUSES:
                        raise UpstreamBusy(f"{url.host} answered {response.status}",
                                           retry_after_header(response.headers.get("Retry-After")))
                    if response.status in GONE_STATUSES:
                        raise UpstreamNotFound(f"{url.host} answered {response.status}")
                    if response.status != 200:
                        raise UpstreamError(f"{url.host} answered {response.status}")
                    data = await read_capped(response, settings.max_image_bytes, hold)
                    metrics.FETCH_DURATION.observe(loop.time() - started)
                    metrics.FETCH_BYTES.observe(len(data))
                    return data
            raise UpstreamError(f"more than {MAX_REDIRECTS} redirects")
    except TimeoutError:
        raise UpstreamTimeout(f"no complete answer within {settings.fetch_timeout:g} s") from None
    except aiohttp.ClientConnectorError as exc:
        if isinstance(exc.os_error, BlockedAddress):
            raise UrlNotAllowed(f"{url.host} resolves to a non-public address; NSFWOID_ALLOW_PRIVATE_ADDRESSES=true "
                                  "allows such addresses (for a trusted local host only)") from None
        raise UpstreamError(f"cannot connect to {url.host}: {exc.os_error}") from None
    except aiohttp.ClientError as exc:
        raise UpstreamError(f"download from {url.host} failed: {type(exc).__name__}") from None


async def read_capped(response: aiohttp.ClientResponse, cap: int, hold: Callable[[int | None], None] | None) \
        -> bytes:
    """The whole body, or PayloadTooLarge: at once for a declared length over the cap, else as soon as its size
    passes it. `hold`: see fetch."""
    declared = response.content_length
    if declared is not None:
        check_size(declared, cap, "the declared length")
    if hold is not None:
        compressed = response.headers.get("Content-Encoding", "identity").lower() != "identity"
        hold(None if compressed else declared)
    buffer = bytearray()
    async for chunk in response.content.iter_chunked(CHUNK_BYTES):
        buffer += chunk
        check_size(len(buffer), cap, "the download")
    return bytes(buffer)


def retry_after_header(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header: a number of seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.datetime.now(datetime.UTC)).total_seconds())


def _redirect_target(url: URL, response: aiohttp.ClientResponse, allowed_hosts: tuple[str, ...]) -> URL:
    location = response.headers.get("Location")
    if not location:
        raise UpstreamError(f"{url.host} redirected without a Location")
    try:
        target = url.join(URL(location))
    except ValueError:
        raise UpstreamError(f"{url.host} redirected to an unreadable Location") from None
    try:
        return checked_url(target, allowed_hosts)
    except InvalidUrl as exc:
        raise UpstreamError(f"redirect to an invalid URL: {exc.detail}") from None

