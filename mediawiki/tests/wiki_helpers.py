"""What the MediaWiki tests share besides the fixtures of conftest.py: test files and images, the wiki's own
queries and logs, and stand-ins for a failing, slow or silent service."""

from __future__ import annotations

import collections
import contextlib
import http.server
import io
import socket
import sqlite3
import subprocess
import threading
import time
from contextlib import closing
from pathlib import Path

import requests
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from tests.images import FIDELITY, png_with_text
from tests.processes import free_port, start_service

HIGH, LOW = "warm_flat.png", "retina.jpg"  # the fixtures' two highest scores, about 0.29 and 0.18


MEDIAWIKI = Path("/usr/share/mediawiki")  # where PHP sees MediaWiki, on the host and in the chroot


EXTENSION = Path(__file__).resolve().parents[1] / "Nsfwoid"


SCORE_FILES = EXTENSION / "maintenance" / "scoreFiles.php"


# nsfwoid_score as the sha256-keyed schema made it, which update.php migrates: that version's generated SQL
# for each database (MySQL's is also what benchmarks/score_table_size.py measures).
FIXTURES = Path(__file__).with_name("fixtures")


FIRST_SCHEMA = FIXTURES / "first-schema-sqlite.sql"


# Debian's chromium and chromedriver (mediawiki/tests/install-debian-packages.sh).
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


DISALLOWED = "abusefilter-disallowed"


ADMIN, PASSWORD = "Admin", "Nsfwoid-test-password-1"  # the wiki's first user, a sysop (conftest.py; tests import


def image(tag: str, fixture: str = HIGH) -> bytes:
    """New bytes with the pixels, and so the score, of a PNG fixture."""
    return png_with_text((FIDELITY / fixture).read_bytes(), tag.encode())


def svg(tag: str) -> bytes:
    """A new SVG file: MediaWiki takes it, and the service does not read SVG."""
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><title>{tag}</title>'
            '<rect width="10" height="10"/></svg>').encode()


def big_jpeg(tag: str) -> bytes:
    """A JPEG 1600 px wide, with 70 MiB after its end: over $wgNsfwoidMaxFileSize, and so larger than a thumbnail.
    Each tag gives other bytes, and so a file of its own content."""
    return (FIDELITY / "grass_1600.jpg").read_bytes() + tag.encode() + bytes(70 * 2**20)


PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"


def too_many_pixels() -> bytes:
    """A small PNG of 8000 × 7000 pixels, over the service's NSFWOID_MAX_PIXELS (50 million)."""
    out = io.BytesIO()
    Image.new("1", (8000, 7000)).save(out, "PNG")
    return out.getvalue()


def error_code(answer: dict) -> str | None:
    return answer.get("error", {}).get("code")


def sql_logged_to(path: Path) -> str:
    """Settings that log each SQL query to `path`: MediaWiki 1.39 logs them to the DBQuery channel, 1.43 to
    rdbms."""
    return f'$wgDebugDumpSql = true;\n$wgDebugLogGroups["DBQuery"] = $wgDebugLogGroups["rdbms"] = "{path}";'


def output_until(run: subprocess.Popen, prefix: str) -> str:
    """What a running script has printed, up to and including its first line that starts with prefix."""
    output = ""
    for line in run.stdout:
        output += line
        if line.startswith(prefix):
            return output
    raise AssertionError(f"the script ended without a line starting {prefix!r}:\n{output}")


def generate_sql(wiki, script: str, source: str | Path, generated: Path, db_type: str):
    """MediaWiki's generateSchemaSql.php or generateSchemaChangeSql.php, on an absolute path or one under
    Nsfwoid/sql (which the generated file names as its source)."""
    prepend = f"auto_prepend_file={Path(__file__).with_name('debian-doctrine.php')}"
    wiki.php(f"maintenance/{script}", "--json", Path(EXTENSION.name, "sql", source), "--sql", generated,
             "--type", db_type, cwd=EXTENSION.parent, options=("-d", prepend))


@contextlib.contextmanager
def counting_parses(wiki, title: str):
    """A log with a line for each parse of the page's text (not of interface messages) during the block."""
    parses = wiki.root / f"parses of {title}.log"
    with wiki.settings(f"""$wgHooks["ParserAfterParse"][] = static function ( $parser ) {{
    if ( $parser->getTitle()->getPrefixedText() === "{title}" && !$parser->getOptions()->getInterfaceMessage() ) {{
        file_put_contents( "{parses}", "parse\\n", FILE_APPEND );
    }}
}};"""):
        yield parses


class SlowService:
    """A stand-in for the service that answers every scoring request `delay` seconds late, and everything else at
    once, by passing each request on to the real service: slow, but within the edit's budget."""

    def __init__(self, target: str, delay: float):
        import http.server

        self.scoring_requests = 0
        stand_in = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.pass_on(requests.get(target + self.path, timeout=30))

            def do_POST(self):
                stand_in.scoring_requests += 1
                body = self.rfile.read(int(self.headers["Content-Length"]))
                time.sleep(delay)
                self.pass_on(requests.post(target + self.path, data=body, timeout=30, headers={
                    "Content-Type": self.headers["Content-Type"], "Accept": self.headers.get("Accept", "*/*")}))

            def pass_on(self, answer):
                self.send_response(answer.status_code)
                self.send_header("Content-Type", answer.headers["Content-Type"])
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class StatsListener:
    """A statsd server on loopback that keeps every line it is sent."""

    def __init__(self):
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.socket.getsockname()[1]}"
        self.lines: list[str] = []
        threading.Thread(target=self._receive, daemon=True).start()

    def _receive(self):
        with contextlib.suppress(OSError):  # closed
            while True:
                self.lines += self.socket.recv(65536).decode().splitlines()

    def counts(self, wait: float = 0.5) -> collections.Counter:
        """The sum of each counter sent so far, by its line's name and tags: `name` or `name|#tags`."""
        time.sleep(wait)  # the datagrams of a script that just ended
        counts = collections.Counter()
        for line in self.lines:
            name, _, rest = line.partition(":")
            value, kind, *tags = rest.split("|")
            if kind == "c":
                counts["|".join([name, *[tag for tag in tags if tag.startswith("#")]])] += float(value)
        return counts


class FailingService(http.server.ThreadingHTTPServer):
    """Answers every request with 500 and a problem document, as a service in trouble would."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(500)
            self.send_header("Content-Type", "application/problem+json")
            self.end_headers()
            self.wfile.write(b'{"type": "about:blank", "status": 500}')

        do_POST = do_GET

        def log_message(self, *args):
            pass

    def __init__(self):
        super().__init__(("127.0.0.1", 0), self.Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, daemon=True).start()


def add_scores_and_scored_files(database: sqlite3.Connection, model: str, numbers: range):
    """For each number, a score of another model for no file of the wiki; and a file, named to sort before every
    file of the wiki's own, with a score of the current model (sha256)."""
    database.execute("INSERT OR IGNORE INTO nsfwoid_model (nsm_sha256, nsm_first_seen) VALUES (?, '20200101000000')",
                     ("0" * 64,))
    current, other = (database.execute("SELECT nsm_id FROM nsfwoid_model WHERE nsm_sha256 = ?", (sha256,)).fetchone()[0]
                      for sha256 in (model, "0" * 64))
    row = database.execute("SELECT * FROM image LIMIT 1").fetchone()
    columns = [column[0] for column in database.execute("SELECT * FROM image LIMIT 0").description]
    name, sha1 = columns.index("img_name"), columns.index("img_sha1")

    def file(number: int) -> tuple:
        copy = list(row)
        copy[name], copy[sha1] = f"0{number:06d}.png", f"z{number:030x}"
        return tuple(copy)

    with database:
        database.executemany("INSERT INTO nsfwoid_score VALUES (?, 0.5, ?, '20200101000000')",
                             ((f"{n:031d}", other) for n in numbers))
        database.executemany(f"INSERT INTO image VALUES ({', '.join('?' * len(columns))})", map(file, numbers))
        database.executemany("INSERT INTO nsfwoid_score VALUES (?, 0.5, ?, '20200101000000')",
                             ((f"z{n:030x}", current) for n in numbers))


def vm_steps(database: sqlite3.Connection, sql: str) -> int:
    """The work SQLite does for a query, in hundreds of virtual machine instructions."""
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    database.set_progress_handler(count, 100)
    try:
        database.execute(sql).fetchall()
    finally:
        database.set_progress_handler(None, 100)
    return steps


def stored_rows(wiki, name: str = "testwiki") -> dict[str, tuple[float, str]]:
    """nsfwoid_score, read in the wiki's own database: base-36 SHA-1 → (score, model's sha256)."""
    with closing(sqlite3.connect(f"file:{wiki.root / 'data' / name}.sqlite?mode=ro", uri=True)) as database:
        return {sha1: (score, model) for sha1, score, model in database.execute(
            "SELECT nss_sha1, nss_score, nsm_sha256 FROM nsfwoid_score JOIN nsfwoid_model ON nsm_id = nss_model")}


def score_jobs(wiki, title: str) -> list[str]:
    return [line for line in wiki.php("maintenance/showJobs.php", "--list").stdout.splitlines()
            if line.startswith(f"nsfwoidScore {title} ")]


def review_queue(who, threshold: str, prefix: str, show: str = "unreviewed") -> dict[str, bool]:
    """list=nsfwscores as `who` reads it: title → reviewed, for the files whose names start with prefix."""
    entries = who.api(action="query", list="nsfwscores", nsminscore=threshold, nslimit="max", nsshow=show,
                      nsprop="title|reviewed")["query"]["nsfwscores"]
    return {entry["title"]: entry["reviewed"] for entry in entries if entry["title"].startswith(f"File:{prefix}")}


def review_page(who, threshold: str, show: str | None = None) -> str:
    return who.session.get(who.url + "/index.php", timeout=60, params={
        "title": "Special:NsfwoidReview", "minscore": threshold, "limit": "500",
        **({"show": show} if show else {})}).text


MIGRATION_CHECK = """
$store = MediaWiki\\MediaWikiServices::getInstance()->getService( 'Nsfwoid.ScoreStore' );
$store->save( new MediaWiki\\Extension\\Nsfwoid\\ServiceScore( 0.25, 'sha1new', '{current}', 'open_nsfw' ) );
echo json_encode( [
    'rows' => $store->getRows( [ 'sha1high', 'sha1low', 'sha1retired', 'sha1new' ] ),
    'current' => $store->getScores( [ 'sha1high', 'sha1low', 'sha1retired', 'sha1new' ], '{current}' ),
    'newest' => $store->getNewestModel(),
] ), "\\n";
"""


class Service:
    """A real `nsfwoid serve` on a fixed port, which a test may stop and start again."""

    def __init__(self, allowed_host: str, **env: str):
        """env: more NSFWOID_* settings."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.allowed_host = allowed_host
        self.env = env
        self.process = None
        self.start()

    def start(self):
        self.process, _ = start_service(port=self.port, NSFWOID_ALLOWED_HOSTS=self.allowed_host,
                                        NSFWOID_ALLOW_PRIVATE_ADDRESSES="true", **self.env)

    def stop(self):
        self.process.terminate()
        self.process.wait(30)

    @contextlib.contextmanager
    def stopped(self):
        self.stop()
        try:
            yield
        finally:
            self.start()

    def score(self, data: bytes) -> dict:
        response = requests.post(self.url + "/v1/score", data=data, timeout=60,
                                 headers={"Content-Type": "application/octet-stream", "Accept": "application/json"})
        response.raise_for_status()
        return response.json()

    def score_requests(self) -> float:
        """How many scoring requests the service has answered since it started, from its own metrics."""
        text = requests.get(self.url + "/metrics", timeout=10).text
        return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
                   if sample.name == "nsfwoid_http_requests_total" and sample.labels["route"] == "/v1/score")
