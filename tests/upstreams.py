"""Local stand-ins for the hosts the service downloads from: image hosts, and a forward proxy."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import threading
import urllib.parse
import urllib.request


class ForwardProxy:
    """A loopback HTTP forward proxy, as a cluster's egress proxy is: it relays GETs of plain-http URLs and tunnels
    CONNECTs (https), one connection each, and records the target of every request: a URL, or host:port."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.url = ""
        self._server: asyncio.Server | None = None

    async def start(self) -> ForwardProxy:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            head = await client_reader.readuntil(b"\r\n\r\n")
            request_line, _, header_block = head.partition(b"\r\n")
            method, target, version = request_line.split(b" ")
            self.requests.append(target.decode())
            if method == b"CONNECT":
                host, _, port = target.decode().rpartition(":")
                upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port))
                client_writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                await asyncio.gather(_pipe(client_reader, upstream_writer), _pipe(upstream_reader, client_writer))
                return
            url = urllib.parse.urlsplit(target.decode())
            headers = [line for line in header_block.split(b"\r\n") if line and not line.lower().startswith(
                (b"connection:", b"keep-alive:", b"proxy-"))]
            upstream_reader, upstream_writer = await asyncio.open_connection(url.hostname, url.port or 80)
            path = (url.path or "/") + (f"?{url.query}" if url.query else "")
            upstream_writer.write(b"\r\n".join([b" ".join([method, path.encode(), version]), *headers,
                                                b"Connection: close", b"", b""]))
            await _pipe(upstream_reader, client_writer)
            upstream_writer.close()
        finally:
            client_writer.close()

    def close(self) -> None:
        self._server.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until the reader's end, then close the writer."""
    try:
        while chunk := await reader.read(64 * 1024):
            writer.write(chunk)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


def answering(data: bytes, content_type: str) -> type[http.server.BaseHTTPRequestHandler]:
    """A request handler answering every GET with these bytes."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    return Handler


@contextlib.contextmanager
def image_host(data: bytes, content_type: str):
    """A loopback HTTP server answering every GET with these bytes: its base URL, for the block."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), answering(data, content_type))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
