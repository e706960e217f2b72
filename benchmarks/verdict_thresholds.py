"""How long meta=nsfwthresholds takes to answer on a wiki with many verdicts (docs/performance.md).

It installs a throwaway wiki (Debian's MediaWiki, SQLite, `php -S` on loopback) with the extension, imports one
file, copies its `image` row into --uploads scored uploads, and writes --verdicts verdicts of known scores into
`nsfwoid_verdict`, as a wiki with years of reviews would have them. Then, logged in as its sysop, it times the
API's answer (with the curve) three ways:

- uncached: $wgMainCacheType = CACHE_NONE, so every answer reads and counts every verdict;
- cached: CACHE_DB, the answer after one that filled the cache;
- after a verdict: CACHE_DB, the first answer after action=nsfwoidreview&verdict=, whose write invalidates the cache.

    python3 benchmarks/verdict_thresholds.py [--verdicts 100000] [--uploads 10000] [--php php]

`--php mediawiki/tests/php-1.43` runs it on the MediaWiki 1.43 chroot (as root). No service is needed: the
verdicts and scores are written directly. Each release's run replaces its own entry in the output.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import sqlite3
import statistics
import subprocess
import tempfile
import time
from contextlib import closing
from pathlib import Path

import requests
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
MEDIAWIKI = Path("/usr/share/mediawiki")
EXTENSION = ROOT / "mediawiki" / "Nsfwoid" / "extension.json"
ROUTER = ROOT / "mediawiki" / "tests" / "router.php"
PASSWORD = "Nsfwoid-benchmark-password-1"
MODEL = "864bb37bf8863564b87eb330ab8c785a79a773f4e7c43cb96db52ed8611305fa"


def free_port() -> int:
    with closing(socket.socket()) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def install(php: list[str], root: Path, port: int) -> dict[str, str]:
    env = {**os.environ, "MW_CONFIG_FILE": str(root / "LocalSettings.php"), "MW_INSTALL_PATH": str(MEDIAWIKI)}
    (root / "data").mkdir()
    (root / "images").mkdir()
    subprocess.run([*php, MEDIAWIKI / "maintenance" / "install.php", "--confpath", root, "--dbtype", "sqlite",
                    "--dbpath", root / "data", "--dbname", "benchwiki", "--server", f"http://127.0.0.1:{port}",
                    "--scriptpath", "", "--pass", PASSWORD, "benchwiki", "Admin"],
                   env=env, check=True, capture_output=True)
    with open(root / "LocalSettings.php", "a") as settings:
        settings.write(f"""
$wgEnableUploads = true;
$wgUploadDirectory = "{root}/images";
$wgUseInstantCommons = false;
$wgNsfwoidScoreOnUpload = false;
$wgJobRunRate = 0;
$wgSessionCacheType = CACHE_DB;
$wgMainCacheType = getenv( "BENCH_CACHE" ) === "db" ? CACHE_DB : CACHE_NONE;
wfLoadExtension( "Nsfwoid", "{EXTENSION}" );
""")
    subprocess.run([*php, MEDIAWIKI / "maintenance" / "update.php", "--quick"], env=env, check=True,
                   capture_output=True)
    Image.new("RGB", (8, 8), "white").save(root / "Bench.png")
    subprocess.run([*php, MEDIAWIKI / "maintenance" / "importImages.php", "--extensions=png", root], env=env,
                   check=True, capture_output=True)
    return env


def fill(database: Path, verdicts: int, uploads: int) -> None:
    chooser = random.Random(49)
    with closing(sqlite3.connect(database)) as db, db:
        db.execute("INSERT INTO nsfwoid_model (nsm_id, nsm_sha256, nsm_name, nsm_first_seen) "
                   "VALUES (1, ?, 'open_nsfw', '20260101000000')", (MODEL,))
        columns = [column[0] for column in db.execute("SELECT * FROM image LIMIT 0").description]
        template = list(db.execute("SELECT * FROM image").fetchone())
        name, sha1, stamp = (columns.index(column) for column in ("img_name", "img_sha1", "img_timestamp"))

        def upload(n: int) -> tuple:
            row = list(template)
            row[name], row[sha1] = f"Upload_{n:06d}.png", f"u{n:030d}"
            row[stamp] = f"2026{n % 12 + 1:02d}{n % 28 + 1:02d}{n % 24:02d}0000"
            return tuple(row)
        db.executemany(f"INSERT INTO image VALUES ({', '.join('?' * len(columns))})", map(upload, range(uploads)))
        db.executemany("INSERT INTO nsfwoid_score VALUES (?, ?, 1, '20260101000000')",
                       ((f"u{n:030d}", chooser.random()) for n in range(uploads)))
        db.executemany("INSERT INTO nsfwoid_verdict VALUES (?, ?, ?, 1, 1, '20260101000000')", (
            (f"v{n:030d}", int(explicit), min(1.0, max(0.0, chooser.gauss(0.75 if explicit else 0.35, 0.2))))
            for n, explicit in ((n, n % 3 == 0) for n in range(verdicts))))


class Wiki:
    def __init__(self, php: list[str], env: dict[str, str], port: int, cache: str):
        self.url = f"http://127.0.0.1:{port}"
        self.server = subprocess.Popen([*php, "-S", f"127.0.0.1:{port}", "-t", MEDIAWIKI, ROUTER],
                                       env={**env, "BENCH_CACHE": cache}, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)
        self.session = requests.Session()
        for _ in range(300):
            try:
                self.api(action="query", meta="siteinfo")
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        token = self.api(action="query", meta="tokens", type="login")["query"]["tokens"]["logintoken"]
        login = self.api("POST", action="clientlogin", username="Admin", password=PASSWORD,
                         loginreturnurl=self.url + "/", logintoken=token)
        assert login["clientlogin"]["status"] == "PASS", login

    def api(self, method: str = "GET", **params) -> dict:
        params = {"format": "json", "formatversion": "2", **params}
        call = self.session.get if method == "GET" else self.session.post
        answer = call(self.url + "/api.php", **{"params" if method == "GET" else "data": params}, timeout=120)
        answer.raise_for_status()
        return answer.json()

    def timed_thresholds(self) -> float:
        started = time.perf_counter()
        answer = self.api(action="query", meta="nsfwthresholds", ntcurve="1")["query"]["nsfwthresholds"]
        seconds = time.perf_counter() - started
        assert answer["enough"] and answer["thresholds"][0]["uploads"]["of"] > 0, answer
        return seconds

    def stop(self):
        self.server.terminate()
        self.server.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--verdicts", type=int, default=100_000)
    parser.add_argument("--uploads", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--php", default="php", help="the PHP command, such as mediawiki/tests/php-1.43")
    parser.add_argument("--output", type=Path, default=Path(__file__).with_name("verdict_thresholds.json"))
    args = parser.parse_args()
    php = [str(Path(args.php).resolve()) if "/" in args.php else args.php]
    with tempfile.TemporaryDirectory(prefix="nsfwoid-verdicts-") as directory:
        root, port = Path(directory), free_port()
        env = install(php, root, port)
        fill(root / "data" / "benchwiki.sqlite", args.verdicts, args.uploads)
        results = {"verdicts": args.verdicts, "uploads": args.uploads, "repeat": args.repeat}

        wiki = Wiki(php, env, port, "none")
        try:
            general = wiki.api(action="query", meta="siteinfo")["query"]["general"]
            results["version"] = f"{general['generator']}, PHP {general['phpversion']}"
            results["uncached_s"] = statistics.median(wiki.timed_thresholds() for _ in range(args.repeat))
        finally:
            wiki.stop()
        wiki = Wiki(php, env, port, "db")
        try:
            wiki.timed_thresholds()
            results["cached_s"] = statistics.median(wiki.timed_thresholds() for _ in range(args.repeat))
            after = []
            for n in range(args.repeat):
                verdict = wiki.api("POST", action="nsfwoidreview", title=f"File:Upload {n:06d}.png",
                                   verdict="explicit", token=wiki.api(action="query", meta="tokens")["query"][
                                       "tokens"]["csrftoken"])
                assert "nsfwoidreview" in verdict, verdict
                after.append(wiki.timed_thresholds())
            results["after_a_verdict_s"] = statistics.median(after)
        finally:
            wiki.stop()
    # One run per MediaWiki release, kept side by side
    runs = json.loads(args.output.read_text()) if args.output.exists() else {}
    runs[results["version"].split(",")[0]] = results
    args.output.write_text(json.dumps(runs, indent=2, sort_keys=True) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
