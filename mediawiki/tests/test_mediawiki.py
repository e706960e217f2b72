"""The Nsfwoid extension on a real wiki with the real AbuseFilter, shown through the wiki's own Action API.

Every test uploads files of its own: PNGs with the pixels of a fidelity fixture and a tEXt chunk that makes
their bytes, and so their SHA-1, new. A file's score is thus known in advance, and its stored score is not.
"""

from __future__ import annotations

import collections
import contextlib
import html
import http.server
import io
import json
import math
import random
import re
import socket
import sqlite3
import subprocess
import threading
import time
from contextlib import closing
from pathlib import Path

import pytest
import requests
from PIL import Image

from tests.helpers import FIDELITY, HungService, free_port, image_host, png_with_text

HIGH, LOW = "warm_flat.png", "retina.jpg"  # the fixtures' two highest scores, about 0.29 and 0.18
MEDIAWIKI = Path("/usr/share/mediawiki")  # also in conftest.py: tests import no test module
EXTENSION = Path(__file__).resolve().parents[1] / "Nsfwoid"
SCORE_FILES = EXTENSION / "maintenance" / "scoreFiles.php"
# nsfwoid_score as the extension's first schema made it, which update.php migrates: that version's generated SQL
# for each database (MySQL's is also what benchmarks/score_table_size.py measures).
FIXTURES = Path(__file__).with_name("fixtures")
FIRST_SCHEMA = FIXTURES / "first-schema-sqlite.sql"
# Debian's chromium and chromedriver (mediawiki/tests/install-debian-packages.sh).
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
DISALLOWED = "abusefilter-disallowed"
ADMIN, PASSWORD = "Admin", "Nsfwoid-test-password-1"  # the wiki's first user, a sysop (conftest.py; tests import
# no test module)


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


@pytest.fixture(scope="module")
def threshold(service) -> float:
    """Between the two highest-scoring fixtures: HIGH is over it, LOW under it."""
    high, low = (service.score((FIDELITY / name).read_bytes())["score"] for name in (HIGH, LOW))
    assert high > low
    return (high + low) / 2


@pytest.fixture(scope="module")
def filters(wiki, threshold):
    """The two filters of the README, saved through Special:AbuseFilter.

    The upload filter is confined to titles starting with "Guarded", so that other tests can upload high-scoring
    files to add them to pages. The title comes first: AbuseFilter stops at the first false operand of `&`, so
    file_nsfw_score is not computed, and no score is stored, for the other uploads.
    """
    wiki.add_filter("Explicit image added to a page", f'action == "edit" & added_files_nsfw_score > {threshold:.9f}')
    wiki.add_filter("Explicit upload",
                    f'action == "upload" & page_title rlike "^Guarded" & file_nsfw_score > {threshold:.9f}')


def test_every_php_file_passes_php_lint(mediawiki):
    files = sorted(Path(__file__).parents[1].rglob("*.php"))
    assert len(files) >= 12
    for path in files:
        result = subprocess.run([*mediawiki.php, "-l", str(path)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr


def generate_sql(wiki, script: str, source: str | Path, generated: Path, db_type: str):
    """MediaWiki's generateSchemaSql.php or generateSchemaChangeSql.php, on an absolute path or one under
    Nsfwoid/sql (which the generated file names as its source)."""
    prepend = f"auto_prepend_file={Path(__file__).with_name('debian-doctrine.php')}"
    wiki.php(f"maintenance/{script}", "--json", Path(EXTENSION.name, "sql", source), "--sql", generated,
             "--type", db_type, cwd=EXTENSION.parent, options=("-d", prepend))


@pytest.mark.parametrize("db_type", ["sqlite", "mysql", "postgres"])
def test_the_sql_files_are_generated_from_the_abstract_schema(wiki, tmp_path, db_type):
    """The committed files are what MediaWiki 1.39's generator writes, and 1.43's up to white space: its
    generateSchemaChangeSql.php keeps the SQL formatter's line breaks."""
    sql = EXTENSION / "sql"
    for script, source, name in [
            ("generateSchemaSql.php", "tables.json", "tables-generated.sql"),
            ("generateSchemaSql.php", "abstractSchemaChanges/patch-nsfwoid_model.json", "patch-nsfwoid_model.sql"),
            ("generateSchemaChangeSql.php", "abstractSchemaChanges/patch-nsfwoid_score-nss_model.json",
             "patch-nsfwoid_score-nss_model.sql"),
            ("generateSchemaSql.php", "abstractSchemaChanges/patch-nsfwoid_review.json", "patch-nsfwoid_review.sql"),
            ("generateSchemaSql.php", "abstractSchemaChanges/patch-nsfwoid_verdict.json", "patch-nsfwoid_verdict.sql")]:
        generate_sql(wiki, script, source, tmp_path / name, db_type)
        generated, committed = (tmp_path / name).read_text(), (sql / db_type / name).read_text()
        if wiki.mediawiki.release > (1, 39):
            generated, committed = (" ".join(text.split()) for text in (generated, committed))
        assert generated == committed, (db_type, name)


def test_the_schema_changes_start_from_the_first_schema_and_end_at_tables_json(wiki, tmp_path):
    """The change files repeat tables.json, and start from the table that a wiki on the first schema has."""
    sql = EXTENSION / "sql"
    tables = {table["name"]: table for table in json.loads((sql / "tables.json").read_text())}
    change = json.loads((sql / "abstractSchemaChanges" / "patch-nsfwoid_score-nss_model.json").read_text())
    assert change["after"] == tables["nsfwoid_score"]
    assert [column["name"] for column in change["before"]["columns"]] == \
        [column["name"] for column in tables["nsfwoid_score"]["columns"]]
    for table in ("nsfwoid_model", "nsfwoid_review", "nsfwoid_verdict"):
        assert json.loads((sql / "abstractSchemaChanges" / f"patch-{table}.json").read_text()) == [tables[table]]
    (tmp_path / "before.json").write_text(json.dumps([change["before"]]))

    def statements(path: Path) -> list[str]:
        return [line for line in path.read_text().splitlines() if not line.startswith("--")]
    for db_type in ("sqlite", "mysql", "postgres"):
        generate_sql(wiki, "generateSchemaSql.php", tmp_path / "before.json", tmp_path / "before.sql", db_type)
        assert statements(tmp_path / "before.sql") == statements(FIXTURES / f"first-schema-{db_type}.sql"), db_type


def test_update_php_installed_the_tables(wiki):
    tables = wiki.php("maintenance/sql.php", "--query", "SELECT name FROM sqlite_master WHERE type='table'").stdout
    assert all(table in tables for table in ("nsfwoid_score", "nsfwoid_model", "nsfwoid_review", "nsfwoid_verdict"))


def test_an_upload_is_scored_by_a_job_and_stored_by_img_sha1(wiki, service):
    data = image("job")
    answer = wiki.upload("Scored by job.png", data)
    assert answer["upload"]["result"] == "Success", answer
    # The upload request only queued the job: nothing is stored before the job runs.
    assert "nsfwoidScore File:Scored_by_job.png" in wiki.php("maintenance/showJobs.php", "--list").stdout
    assert wiki.score_of("Scored by job.png") is None

    wiki.run_jobs()

    stored, expected = wiki.score_of("Scored by job.png"), service.score(data)
    assert stored["score"] == pytest.approx(expected["score"], abs=1e-6)
    img_sha1 = int(answer["upload"]["imageinfo"]["sha1"], 16)
    assert int(stored["sha1"], 36) == img_sha1 and stored["sha1"] == expected["sha1_base36"]
    assert stored["model"] == expected["model"]["sha256"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", stored["timestamp"])


def test_the_variables_are_known_to_the_rule_editor(wiki):
    for rules in ("added_files_nsfw_score > 0.8", "file_nsfw_score > 0.8"):
        assert wiki.api(action="abusefilterchecksyntax", filter=rules)["abusefilterchecksyntax"]["status"] == "ok"
    unknown = wiki.api(action="abusefilterchecksyntax", filter="no_such_nsfw_score > 0.8")
    assert unknown["abusefilterchecksyntax"]["status"] == "error"
    messages = wiki.api(action="query", meta="allmessages", amlang="en", ammessages="|".join(
        f"abusefilter-edit-builder-vars-{name}" for name in ("added-files-nsfw-score", "file-nsfw-score")))
    assert all("missing" not in message for message in messages["query"]["allmessages"])


def test_a_filter_stops_an_edit_adding_a_high_scoring_file_and_not_a_low_one(wiki, filters):
    wiki.upload("Edit high.png", image("edit"))
    wiki.upload("Edit low.jpg", (FIDELITY / LOW).read_bytes())
    wiki.run_jobs()
    assert error_code(wiki.edit("Edit target", "Text.\n[[File:Edit high.png]]")) == DISALLOWED
    assert wiki.edit("Edit target", "Text.\n[[File:Edit low.jpg]]")["edit"]["result"] == "Success"
    # The page already links the low file: only what an edit adds counts.
    assert wiki.edit("Edit target", "Text.\n[[File:Edit low.jpg]] more")["edit"]["result"] == "Success"


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


def test_the_added_files_share_the_parse_of_the_edit(wiki, filters):
    """Every edit that a filter on added_files_nsfw_score checks needs the files of its new text. The variable takes
    them from the parse that AbuseFilter and the save share, so an edit's page text is parsed once, not twice."""
    with counting_parses(wiki, "Shared parse target") as parses:
        wiki.upload("Shared parse.jpg", (FIDELITY / LOW).read_bytes())
        assert wiki.edit("Shared parse target", "[[File:Shared parse.jpg]]")["edit"]["result"] == "Success"
    assert wiki.score_of("Shared parse.jpg") is not None  # the variable was computed
    assert parses.read_text().count("parse") == 1


def test_after_other_filters_have_read_the_edit_s_parse_the_added_files_still_share_it(wiki, filters, threshold):
    """The variable reaches the edit's page through core's EditFilter hook, not through AbuseFilter's own lazy
    variables (all_links, old_links, new_pst, new_html): when filters before it have computed all four, the edit
    is still parsed once, and the files it adds are found."""
    wiki.upload("Second parse.png", image("second parse"))
    wiki.run_jobs()
    first = wiki.add_filter("Reads the edit's parse before the score", (
        'action == "edit" & length(all_links) >= 0 & length(old_links) >= 0 & length(new_pst) >= 0'
        f' & length(new_html) >= 0 & added_files_nsfw_score > {threshold:.9f}'))
    # The README's filter reads the score first on every edit: for this edit, only the new filter runs.
    with closing(sqlite3.connect(f"file:{wiki.root / 'data' / 'testwiki.sqlite'}?mode=ro", uri=True)) as database:
        others = [str(af_id) for af_id, in database.execute(
            "SELECT af_id FROM abuse_filter WHERE af_enabled = 1 AND af_id <> ?", (first,))]
    assert others
    enable = "UPDATE abuse_filter SET af_enabled = {} WHERE af_id IN ({})"
    wiki.php("maintenance/sql.php", "--query", enable.format(0, ",".join(others)))
    try:
        with counting_parses(wiki, "Second parse target") as parses:
            assert error_code(wiki.edit("Second parse target", "[[File:Second parse.png]]")) == DISALLOWED
    finally:
        wiki.php("maintenance/sql.php", "--query", enable.format(1, ",".join(others)))
        wiki.php("maintenance/sql.php", "--query", enable.format(0, first))
    assert parses.read_text().count("parse") == 1


def test_a_stored_score_stops_the_edit_while_the_service_is_stopped(wiki, service, filters):
    wiki.upload("Stored high.png", image("stored"))
    wiki.run_jobs()
    assert wiki.score_of("Stored high.png") is not None
    with service.stopped():
        assert error_code(wiki.edit("Stored target", "[[File:Stored high.png|thumb|A picture]]")) == DISALLOWED


def test_a_file_with_no_stored_score_is_scored_during_the_edit(wiki, service, filters):
    data = image("on demand")
    with wiki.settings("$wgNsfwoidScoreOnUpload = false;"):
        wiki.upload("On demand.png", data)
    assert "nsfwoidScore" not in wiki.php("maintenance/showJobs.php", "--list").stdout
    assert wiki.score_of("On demand.png") is None

    assert error_code(wiki.edit("On demand target", "<gallery>\nFile:On demand.png\n</gallery>")) == DISALLOWED

    assert wiki.score_of("On demand.png")["score"] == pytest.approx(service.score(data)["score"], abs=1e-6)


def test_a_score_of_another_model_counts_as_missing(wiki, service, filters):
    data = image("old model")
    sha1 = service.score(data)["sha1_base36"]
    with wiki.settings("$wgNsfwoidScoreOnUpload = false;"):
        wiki.upload("Old model.png", data)
    wiki.php("maintenance/sql.php", "--query", "INSERT INTO nsfwoid_model (nsm_sha256, nsm_first_seen) VALUES "
             f"('{'0' * 64}', '20200101000000')")
    wiki.php("maintenance/sql.php", "--query", f"INSERT INTO nsfwoid_score SELECT '{sha1}', 0.0, nsm_id, "
             f"'20200101000000' FROM nsfwoid_model WHERE nsm_sha256 = '{'0' * 64}'")
    assert wiki.score_of("Old model.png")["model"] == "0" * 64

    # Scored 0.0 by the old model, but scored again by the current one during the edit.
    assert error_code(wiki.edit("Old model target", "[[File:Old model.png]]")) == DISALLOWED
    assert wiki.score_of("Old model.png")["model"] == service.score(data)["model"]["sha256"]


def test_with_the_service_stopped_the_edit_saves_and_the_backfill_scores_later(wiki, service, filters):
    with wiki.settings("$wgNsfwoidScoreOnUpload = false;"):
        wiki.upload("Fail open.png", image("fail open"))
    with service.stopped():
        assert wiki.edit("Fail open target", "[[File:Fail open.png]]")["edit"]["result"] == "Success"
    assert wiki.score_of("Fail open.png") is None

    wiki.php(SCORE_FILES)

    assert wiki.score_of("Fail open.png") is not None
    assert error_code(wiki.edit("Fail open second target", "[[File:Fail open.png]]")) == DISALLOWED


def test_a_slow_service_is_given_up_after_the_edit_timeout(wiki, filters, hung_service):
    """A service that accepts connections and never answers: the edit saves, in about the edit timeout."""
    with wiki.settings(f'$wgNsfwoidScoreOnUpload = false;\n$wgNsfwoidServiceUrl = "{hung_service.url}";'
                       "\n$wgNsfwoidEditTimeout = 1;"):
        wiki.upload("Slow service.png", image("slow"))
        started = time.monotonic()
        assert wiki.edit("Slow target", "[[File:Slow service.png]]")["edit"]["result"] == "Success"
        assert time.monotonic() - started < 8
    assert hung_service.connections >= 1
    assert wiki.score_of("Slow service.png") is None


def test_after_a_timeout_edits_leave_the_service_alone_for_the_backoff(wiki, filters, hung_service):
    """A hung service costs one edit the timeout, not every edit that adds a file: within $wgNsfwoidEditBackoff
    of a timeout, edits make no call to it (their checks go on without scores), and after it they call again.
    The backoff is shared through the main object cache, here the database."""
    backoff = 5
    with wiki.settings(f'$wgNsfwoidScoreOnUpload = false;\n$wgNsfwoidServiceUrl = "{hung_service.url}";'
                       f"\n$wgNsfwoidEditTimeout = 1;\n$wgNsfwoidEditBackoff = {backoff};"
                       "\n$wgMainCacheType = CACHE_DB;"):
        for number in range(3):
            wiki.upload(f"Backoff {number}.png", image(f"backoff {number}"))
        assert hung_service.connections == 0

        assert wiki.edit("Backoff target 0", "[[File:Backoff 0.png]]")["edit"]["result"] == "Success"
        timed_out = hung_service.connections
        assert timed_out >= 1
        assert wiki.edit("Backoff target 1", "[[File:Backoff 1.png]]")["edit"]["result"] == "Success"
        assert hung_service.connections == timed_out

        time.sleep(backoff)
        assert wiki.edit("Backoff target 2", "[[File:Backoff 2.png]]")["edit"]["result"] == "Success"
        assert hung_service.connections > timed_out
    assert "edits and uploads use stored scores only for 5 s" in (wiki.root / "nsfwoid.log").read_text()


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


def test_answers_slower_than_half_the_budget_start_the_backoff_too(wiki, filters, service):
    """A service that answers in 1.2 s of a 2 s budget would slow every edit that adds an unscored file by that
    much: after one such answer, edits use stored scores only, and wait on nothing."""
    slow = SlowService(service.url, delay=1.2)
    try:
        with wiki.settings(f'$wgNsfwoidScoreOnUpload = false;\n$wgNsfwoidServiceUrl = "{slow.url}";'
                           "\n$wgNsfwoidEditTimeout = 2;\n$wgNsfwoidEditBackoff = 600;\n$wgMainCacheType = CACHE_DB;"):
            for number in range(2):
                wiki.upload(f"Slow {number}.png", image(f"slow {number}", fixture="logo_rgba.png"))
            assert slow.scoring_requests == 0
            edited = wiki.edit("Slow target 0", "[[File:Slow 0.png]]")
            assert edited.get("edit", {}).get("result") == "Success", edited
            assert slow.scoring_requests == 1
            started = time.monotonic()
            assert wiki.edit("Slow target 1", "[[File:Slow 1.png]]")["edit"]["result"] == "Success"
            assert slow.scoring_requests == 1 and time.monotonic() - started < 1.2
    finally:
        slow.close()
    assert "over half of $wgNsfwoidEditTimeout; edits and uploads use stored scores only for 600 s" in (
        wiki.root / "nsfwoid.log").read_text()


def test_a_refused_connection_does_not_start_the_backoff(wiki, filters):
    """Only a timeout costs an edit time: a service that refuses connections, as one being restarted does, is
    called again by the next edit."""
    port = free_port()
    with wiki.settings(f'$wgNsfwoidScoreOnUpload = false;\n$wgNsfwoidServiceUrl = "http://127.0.0.1:{port}";'
                       "\n$wgNsfwoidEditTimeout = 1;\n$wgNsfwoidEditBackoff = 600;\n$wgMainCacheType = CACHE_DB;"):
        for number in range(2):
            wiki.upload(f"Refused {number}.png", image(f"refused {number}"))
        assert wiki.edit("Refused target 0", "[[File:Refused 0.png]]")["edit"]["result"] == "Success"
        with HungService(port) as back:
            assert wiki.edit("Refused target 1", "[[File:Refused 1.png]]")["edit"]["result"] == "Success"
            assert back.connections >= 1


def test_a_filter_on_file_nsfw_score_stops_an_upload(wiki, filters):
    refused = wiki.upload("Guarded high.png", image("guarded"))
    assert error_code(refused) == DISALLOWED, refused
    assert wiki.upload("Guarded low.png", image("guarded", fixture="logo_rgba.png"))["upload"]["result"] == "Success"


def test_score_files_without_mediawiki_three_directories_up_says_what_to_set(wiki):
    """The extension here is not under MediaWiki's extensions/: without MW_INSTALL_PATH, one line, not a PHP
    fatal."""
    env = {key: value for key, value in wiki.env.items() if key != "MW_INSTALL_PATH"}
    result = subprocess.run([*wiki.mediawiki.php, str(SCORE_FILES)], env=env, cwd=EXTENSION, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 1 and result.stdout == "", result
    assert result.stderr == (f"scoreFiles.php: no MediaWiki in {EXTENSION.parents[1]}. Set MW_INSTALL_PATH to "
                             "MediaWiki's directory, such as MW_INSTALL_PATH=/usr/share/mediawiki on Debian.\n")


def test_score_files_scores_uploads_made_without_jobs(wiki, service):
    names = [f"Backfill {n}.png" for n in range(3)]
    with wiki.settings("$wgNsfwoidScoreOnUpload = false;"):
        for name in names:
            wiki.upload(name, image(name, fixture="logo_rgba.png"))
    assert all(wiki.score_of(name) is None for name in names)

    # Files are taken in name order (img_name) after --start.
    first = wiki.php(SCORE_FILES, "--start", "Backfill", "--batch-size", "1", "--limit", "2", "--sleep", "0.01").stdout
    assert "Checked 1 files, up to Backfill_0.png: scored 1, refused 0, skipped 0" in first, first
    assert "Done: scored 2, refused 0, skipped 0." in first, first
    assert [wiki.score_of(name) is not None for name in names] == [True, True, False]
    assert "Done: scored 1," in wiki.php(SCORE_FILES, "--start", "Backfill_1.png", "--limit", "1").stdout
    assert wiki.score_of(names[2]) is not None
    wiki.php(SCORE_FILES)  # and whatever other tests left unscored: then nothing is left
    assert "Done: scored 0," in wiki.php(SCORE_FILES).stdout

    with wiki.settings("$wgNsfwoidScoreOnUpload = false;"):
        wiki.upload("Backfill queued.png", image("queued", fixture="logo_rgba.png"))
    assert "Done: queued 1," in wiki.php(SCORE_FILES, "--use-jobqueue").stdout
    assert wiki.score_of("Backfill queued.png") is None
    wiki.run_jobs()
    assert wiki.score_of("Backfill queued.png") is not None


def test_score_files_stopped_by_an_outage_names_where_to_resume(wiki, service):
    """The service goes away between two batches: the run stops at the file it could not score and prints the
    --start that resumes there, and a run given it scores that file."""
    names = ["Resume 0.png", "Resume 1.png"]
    with wiki.settings("$wgNsfwoidScoreOnUpload = false;"):
        for name in names:
            wiki.upload(name, image(name, fixture="logo_rgba.png"))
    run = wiki.start_php(SCORE_FILES, "--start", "Resume", "--batch-size", "1", "--sleep", "2")
    output = output_until(run, "Checked ")  # the first batch is done, and the run sleeps before the second
    assert "Checked 1 files, up to Resume_0.png: scored 1, refused 0, skipped 0" in output, output
    with service.stopped():
        output += run.communicate(timeout=60)[0]
        assert run.returncode == 1, output
    assert "Stopped at Resume_1.png: The service failed: unreachable. Rerun with --start 'Resume_0.png' to resume " \
           "there." in output, output
    assert [wiki.score_of(name) is not None for name in names] == [True, False]

    assert "Done: scored 1," in wiki.php(SCORE_FILES, "--start", "Resume_0.png", "--limit", "1").stdout
    assert wiki.score_of(names[1]) is not None


def test_a_queued_backfill_reads_a_batch_in_one_query_and_waits_while_the_queue_is_full(wiki, service):
    """Commons has millions of files to backfill: the unscored files of a batch are read in one query, not one
    each, and no jobs are pushed while more than --max-jobs of them wait for a runner."""
    names = [f"Queued {n}.png" for n in range(4)]
    with wiki.settings("$wgNsfwoidScoreOnUpload = false;"):
        for name in names:
            wiki.upload(name, image(name, fixture="logo_rgba.png"))
    wiki.run_jobs()  # whatever earlier tests queued
    sql_log = wiki.root / "backfill-sql.log"
    with wiki.settings(sql_logged_to(sql_log)):
        run = wiki.start_php(SCORE_FILES, "--use-jobqueue", "--start", "Queued", "--batch-size", "2", "--max-jobs", "1",
                             "--limit", "4")
        output = output_until(run, "Waiting while ")
    # The run read its settings when it started; the job runner below logs no SQL.
    assert "Checked 2 files, up to Queued_1.png: queued 2, refused 0, skipped 0\n" \
           "Waiting while 2 nsfwoidScore jobs are queued, more than --max-jobs 1\n" in output, output
    time.sleep(3)  # it goes on waiting: nothing runs the jobs
    assert run.poll() is None
    wiki.run_jobs()
    output += run.communicate(timeout=60)[0]
    assert run.returncode == 0, output
    assert "Checked 4 files, up to Queued_3.png: queued 4, refused 0, skipped 0\nDone: queued 4," in output, output
    wiki.run_jobs()
    assert all(wiki.score_of(name) is not None for name in names)

    reads = [line for line in sql_log.read_text().splitlines() if re.search(r"img_name (=|IN \() ?'Queued_", line)]
    assert len(reads) == 2, reads  # one for each batch
    assert "'Queued_0.png','Queued_1.png'" in reads[0] and "'Queued_2.png','Queued_3.png'" in reads[1], reads


def test_a_failing_service_fails_the_job_and_a_refused_image_does_not(wiki, service):
    with service.stopped():
        wiki.upload("Unreachable.png", image("unreachable"))
        assert "nsfwoidScore File:Unreachable.png" in wiki.run_jobs()
    assert wiki.score_of("Unreachable.png") is None
    # Not acknowledged: the queue keeps the job to retry it.
    assert "nsfwoidScore File:Unreachable.png" in wiki.php("maintenance/showJobs.php", "--list").stdout

    # A PNG that MediaWiki takes, and that the service refuses: over NSFWOID_MAX_PIXELS (413 image-too-large).
    assert wiki.upload("Refused.png", too_many_pixels())["upload"]["result"] == "Success"
    assert re.search(r"nsfwoidScore File:Refused\.png .* good", wiki.run_jobs())
    assert wiki.score_of("Refused.png") is None
    assert "nsfwoidScore File:Refused.png" not in wiki.php("maintenance/showJobs.php", "--list").stdout
    assert re.search(r"Refused\.png was not scored: The service refused the image \(413 .*image-too-large",
                     (wiki.root / "nsfwoid.log").read_text())


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


def test_the_counters_move_when_the_service_fails(wiki, service, filters, hung_service):
    """The extension's counters, through MediaWiki's stats interface, to a statsd server: the statsd data
    factory's names on every version (web requests and maintenance scripts send them), and on 1.43 StatsFactory's
    own metrics with labels too (web requests send those)."""
    stats = StatsListener()
    failing = FailingService()
    native = (f'$wgStatsTarget = "udp://{stats.address}";\n$wgStatsFormat = "dogstatsd";\n'
              if wiki.mediawiki.release >= (1, 43) else "")
    reporting = f'$wgStatsdServer = "{stats.address}";\n' + native
    try:
        with wiki.settings(reporting + "$wgNsfwoidScoreOnUpload = false;"):
            wiki.upload("Counted.png", image("counted"))
            wiki.upload("Counted on demand.png", image("counted on demand"))
        with wiki.settings(reporting):
            wiki.upload("Counted stored.png", image("counted stored"))
            wiki.run_jobs()
            assert stats.counts()["MediaWiki.Nsfwoid.scores_stored_total"] >= 1
            # Scored on demand during an edit
            assert error_code(wiki.edit("Counted target", "[[File:Counted on demand.png]]")) == DISALLOWED
            counts = stats.counts()
            assert counts["MediaWiki.Nsfwoid.edit_scores_total"] == 1
            if native:
                assert counts["mediawiki.Nsfwoid.edit_scores_total"] == 1
                assert counts["mediawiki.Nsfwoid.scores_stored_total"] >= 1

            # Refused: a job retried
            with service.stopped():
                wiki.upload("Counted refused.png", image("counted refused"))
                wiki.run_jobs()
            counts = stats.counts()
            assert counts["MediaWiki.Nsfwoid.service_failures_total.refused"] >= 1
            assert counts["MediaWiki.Nsfwoid.job_retries_total"] >= 1
            # 4xx: the service refuses the image, and the job is not retried
            retries = counts["MediaWiki.Nsfwoid.job_retries_total"]
            wiki.upload("Counted too large.png", too_many_pixels())
            wiki.run_jobs()
            counts = stats.counts()
            assert counts["MediaWiki.Nsfwoid.service_failures_total.4xx"] == 1
        with wiki.settings(reporting + f'$wgNsfwoidServiceUrl = "{failing.url}";'):
            wiki.upload("Counted failing.png", image("counted failing"))
            wiki.run_jobs()
            assert stats.counts()["MediaWiki.Nsfwoid.service_failures_total.5xx"] >= 1
        # A timeout during an edit, which starts the backoff
        with wiki.settings(reporting + f'$wgNsfwoidServiceUrl = "{hung_service.url}";\n'
                           "$wgNsfwoidEditTimeout = 1;\n$wgMainCacheType = CACHE_DB;"):
            assert wiki.edit("Counted timeout target", "[[File:Counted.png]]")["edit"]["result"] == "Success"
            counts = stats.counts()
            assert counts["MediaWiki.Nsfwoid.service_failures_total.timeout"] >= 1
            assert counts["MediaWiki.Nsfwoid.backoffs_total"] == 1
            if native:
                assert counts["mediawiki.Nsfwoid.service_failures_total|#kind:timeout"] >= 1
                assert counts["mediawiki.Nsfwoid.backoffs_total"] == 1
    finally:
        stats.socket.close()
        failing.shutdown()
    assert counts["MediaWiki.Nsfwoid.job_retries_total"] >= retries  # the refused image was not retried


def test_an_edit_or_upload_sends_only_files_the_service_reads_as_they_are(wiki, commons, service, filters,
                                                                          tmp_path):
    """Commons holds videos, PDFs and TIFFs of gigabytes. While an edit or an upload is checked, a file of a type the
    service does not read, or one over $wgNsfwoidMaxFileSize (by default the service's 25 MiB), is neither sent nor
    read into memory, which would end the edit with a fatal error; nor is a thumbnail rendered for it."""
    (tmp_path / "Unreadable big.jpg").write_bytes(big_jpeg("unreadable"))
    wiki.php("maintenance/importImages.php", "--extensions=jpg", tmp_path)
    assert wiki.upload("Unreadable.svg", svg("unreadable"))["upload"]["result"] == "Success"
    assert commons.upload("Commons unreadable.svg", svg("commons"))["upload"]["result"] == "Success"

    requests_before = service.score_requests()
    with wiki.settings('ini_set( "memory_limit", "64M" );'):
        edited = wiki.edit("Unreadable target",
                           "[[File:Unreadable big.jpg]]\n[[File:Unreadable.svg]]\n[[File:Commons unreadable.svg]]")
        assert edited["edit"]["result"] == "Success", edited
        assert wiki.upload("Guarded unreadable.svg", svg("guarded"))["upload"]["result"] == "Success"
    assert service.score_requests() == requests_before
    assert wiki.score_of("Unreadable big.jpg") is None and wiki.score_of("Unreadable.svg") is None


def test_jobs_and_the_backfill_score_a_thumbnail_of_what_the_service_cannot_read(wiki, service, tmp_path):
    """An SVG, and a JPEG over $wgNsfwoidMaxFileSize, are scored by their 1280 px thumbnails, rendered by MediaWiki,
    under their own SHA-1; a PDF, which this wiki cannot render, gets no job and is skipped by the backfill."""
    assert wiki.upload("Thumbnail drawing.svg", svg("drawing"))["upload"]["result"] == "Success"
    assert wiki.upload("Thumbnail document.pdf", PDF)["upload"]["result"] == "Success"
    jobs = wiki.php("maintenance/showJobs.php", "--list").stdout
    assert "nsfwoidScore File:Thumbnail_drawing.svg" in jobs and "nsfwoidScore File:Thumbnail_document.pdf" not in jobs
    wiki.run_jobs()
    (tmp_path / "Thumbnail photo.jpg").write_bytes(big_jpeg("thumbnail"))
    wiki.php("maintenance/importImages.php", "--extensions=jpg", tmp_path)

    backfill = wiki.php(SCORE_FILES, "--start", "Thumbnail", "--batch-size", "3").stdout
    assert "Checked 3 files, up to Thumbnail_photo.jpg: scored 1, refused 0, skipped 1" in backfill, backfill

    for name in ("Thumbnail drawing.svg", "Thumbnail photo.jpg"):
        stored = wiki.score_of(name)
        thumbnail = next((wiki.root / "images" / "thumb").glob(f"*/*/{name.replace(' ', '_')}/1280px-*"))
        expected = service.score(thumbnail.read_bytes())
        assert stored["score"] == pytest.approx(expected["score"], abs=1e-6), name
        img_sha1 = wiki.api(action="query", prop="imageinfo", iiprop="sha1",
                            titles=f"File:{name}")["query"]["pages"][0]["imageinfo"][0]["sha1"]
        assert int(stored["sha1"], 36) == int(img_sha1, 16) and stored["sha1"] != expected["sha1_base36"]
    assert wiki.score_of("Thumbnail document.pdf") is None


def test_a_bitmap_no_wider_than_the_thumbnail_and_over_the_limit_is_scored_by_a_thumbnail_a_pixel_narrower(
        wiki, service, tmp_path):
    """A 512 px JPEG with 70 MiB after its end: MediaWiki answers a 1280 px thumbnail of it with the file itself,
    which is too large to send. A 511 px one it renders, and that is scored under the file's SHA-1."""
    (tmp_path / "Narrow photo.jpg").write_bytes((FIDELITY / "brick.jpg").read_bytes() + bytes(70 * 2**20))
    wiki.php("maintenance/importImages.php", "--extensions=jpg", tmp_path)

    backfill = wiki.php(SCORE_FILES, "--start", "Narrow", "--limit", "1").stdout
    assert "scored 1, refused 0, skipped 0" in backfill, backfill
    stored = wiki.score_of("Narrow photo.jpg")
    thumbnail = next((wiki.root / "images" / "thumb").glob("*/*/Narrow_photo.jpg/511px-*"))
    assert stored["score"] == pytest.approx(service.score(thumbnail.read_bytes())["score"], abs=1e-6)
    assert stored["score"] == pytest.approx(service.score((FIDELITY / "brick.jpg").read_bytes())["score"], abs=0.01)


def test_a_commons_file_is_scored_by_url(wiki, commons, service, filters):
    data = image("commons")
    assert commons.upload("Commons high.png", data)["upload"]["result"] == "Success"
    assert error_code(wiki.edit("Commons target", "[[File:Commons high.png]]")) == DISALLOWED
    stored = wiki.score_of("Commons high.png")
    assert stored["sha1"] == service.score(data)["sha1_base36"]
    assert stored["score"] == pytest.approx(service.score(data)["score"], abs=1e-6)


def test_a_commons_file_that_commons_scored_needs_no_call_to_the_service(wiki, commons, service, filters):
    """Commons' own Nsfwoid stores the scores of its files, by a thumbnail where the service cannot read the file.
    A wiki that uses a Commons file reads that score through Commons' Action API (prop=nsfwscore) and stores it:
    no download and no call to the service, and the SVG, which the wiki would not score during an edit, has a
    score."""
    names = ["Commons scored.png", "Commons scored drawing.svg"]
    assert commons.upload(names[0], image("commons scored"))["upload"]["result"] == "Success"
    assert commons.upload(names[1], svg("commons scored"))["upload"]["result"] == "Success"
    commons.run_jobs()
    on_commons = [commons.score_of(name) for name in names]
    assert all(on_commons), on_commons

    requests_before = service.score_requests()
    assert error_code(wiki.edit("Commons scored target", "[[File:Commons scored.png]]")) == DISALLOWED
    assert wiki.edit("Commons scored drawing target", "[[File:Commons scored drawing.svg]]")["edit"]["result"] \
        == "Success"
    assert service.score_requests() == requests_before
    stored_here = [wiki.score_of(name) for name in names]
    assert [(row["score"], row["sha1"], row["model"]) for row in stored_here] == \
        [(row["score"], row["sha1"], row["model"]) for row in on_commons]


def test_through_a_database_repository_commons_scores_are_read_in_its_own_table(wiki, commons, service, filters):
    """Wikimedia's wikis reach Commons as a ForeignDBViaLBRepo, not through its API. Then the scores Commons stored
    are read in its own nsfwoid_score, with no call to the service and no copy here, and a Commons file that
    Commons has not scored is scored by URL. A repository whose wiki lacks the table is not asked for it."""
    scored, drawing, unscored = "Commons database.png", "Commons database drawing.svg", "Commons database new.png"
    assert commons.upload(scored, image("commons database"))["upload"]["result"] == "Success"
    assert commons.upload(drawing, svg("commons database"))["upload"]["result"] == "Success"
    commons.run_jobs()
    assert commons.score_of(scored) and commons.score_of(drawing)
    with commons.settings("$wgNsfwoidScoreOnUpload = false;"):
        assert commons.upload(unscored, image("commons database new"))["upload"]["result"] == "Success"
    # SQLite keeps each wiki's database in a file of the data directory: this one names Commons' in this wiki's.
    (wiki.root / "data" / "commonswiki.sqlite").symlink_to(commons.root / "data" / "commonswiki.sqlite")

    def repository(database: str) -> str:
        return f"""$wgForeignFileRepos = [ [
            "class" => ForeignDBViaLBRepo::class, "name" => "commonsdb", "wiki" => "{database}",
            "directory" => "{commons.root}/images", "url" => "{commons.url}/images", "hashLevels" => 2,
            "hasSharedCache" => false, "fetchDescription" => false, "descBaseUrl" => "{commons.url}/index.php/File:",
        ] ];"""

    sql_log = wiki.root / "database-repository-sql.log"
    with wiki.settings(repository("commonswiki")
                       + sql_logged_to(sql_log)):
        requests_before = service.score_requests()
        assert error_code(wiki.edit("Commons database target", f"[[File:{scored}]]")) == DISALLOWED
        assert wiki.edit("Commons database drawing target", f"[[File:{drawing}]]")["edit"]["result"] == "Success"
        assert service.score_requests() == requests_before
        # prop=nsfwscore shows them too, as prop=imageinfo shows a foreign file's information.
        assert [wiki.score_of(name) for name in (scored, drawing)] == \
            [commons.score_of(name) for name in (scored, drawing)]

        assert error_code(wiki.edit("Commons database new target", f"[[File:{unscored}]]")) == DISALLOWED
        assert service.score_requests() == requests_before + 1
        assert wiki.score_of(unscored) is not None
    # Three edits and three API queries read Commons' table; this server asked whether it has one once.
    table_checks = [line for line in sql_log.read_text().splitlines()
                    if "tableExists" in line and "name='nsfwoid_model'" in line]
    assert len(table_checks) == 1, table_checks
    # Back to the API repository, prop=nsfwscore reads only this wiki's table: nothing was copied into it.
    assert wiki.score_of(scored) is None and wiki.score_of(drawing) is None

    source = commons.root / "data" / "commonswiki.sqlite"
    with closing(sqlite3.connect(wiki.root / "data" / "bare.sqlite")) as bare:
        with closing(sqlite3.connect(f"file:{source}?mode=ro", uri=True)) as commons_database:
            commons_database.backup(bare)
        bare.execute("DROP TABLE nsfwoid_score")
        bare.execute("DROP TABLE nsfwoid_model")
    with wiki.settings(repository("bare")):
        assert error_code(wiki.edit("Commons database bare target", f"[[File:{scored}]]")) == DISALLOWED
        assert service.score_requests() == requests_before + 2


def test_a_file_whose_bytes_are_not_its_sha1_is_not_stored(wiki, commons, filters):
    assert commons.upload("Commons swapped.png", image("swapped"))["upload"]["result"] == "Success"
    url = commons.api(action="query", prop="imageinfo", iiprop="url",
                      titles="File:Commons swapped.png")["query"]["pages"][0]["imageinfo"][0]["url"]
    swapped = commons.root / "images" / url.split("/images/", 1)[1]
    swapped.write_bytes(image("other bytes"))
    assert requests.get(url, timeout=10).content == swapped.read_bytes()

    assert wiki.edit("Swapped target", "[[File:Commons swapped.png]]")["edit"]["result"] == "Success"

    assert wiki.score_of("Commons swapped.png") is None
    assert "scored other bytes than Commons_swapped.png" in (wiki.root / "nsfwoid.log").read_text()


def test_without_abusefilter_uploads_are_still_scored(commons, service):
    extensions = commons.api(action="query", meta="siteinfo", siprop="extensions")["query"]["extensions"]
    assert "Nsfwoid" in {e["name"] for e in extensions} and "AbuseFilter" not in {e["name"] for e in extensions}
    data = image("commons job", fixture="logo_rgba.png")
    commons.upload("Commons job.png", data)
    commons.run_jobs()
    assert commons.score_of("Commons job.png")["score"] == pytest.approx(service.score(data)["score"], abs=1e-6)


def test_no_query_of_the_score_table_grows_with_the_wiki(wiki, service, filters, tmp_path):
    """Commons has over 100 million files: a query that scans nsfwoid_score or sorts it would load the database
    on every edit, and one of scoreFiles.php that scans the scored files to find unscored ones would run for
    hours. The wiki logs the SQL of each path that reads the table; each must do the same work on a copy of the
    wiki's database with 50,000 more scores, and 50,000 more files already scored, as on the wiki's own."""
    sql_log = wiki.root / "sql.log"
    with wiki.settings("$wgNsfwoidScoreOnUpload = false;\n" + sql_logged_to(sql_log)):
        wiki.upload("Indexed.png", image("indexed"))
        assert error_code(wiki.edit("Indexed target", "[[File:Indexed.png]]")) == DISALLOWED
        with service.stopped():  # the model of the newest stored score stands in for the service's
            assert error_code(wiki.edit("Indexed second target", "[[File:Indexed.png]]")) == DISALLOWED
        assert wiki.score_of("Indexed.png") is not None
        wiki.php(SCORE_FILES)
    queries = {re.search(r"MediaWiki\\Extension\\Nsfwoid\\(\S+) \[\S+\] \S+: (SELECT .*)", line).groups()
               for line in sql_log.read_text().splitlines()
               if "\\Nsfwoid\\" in line and "SELECT" in line and "nsfwoid_" in line}
    assert {method for method, _ in queries} >= {"ScoreStore::getNewest", "ScoreStore::getScores",
                                                 "ScoreStore::getRows", "ScoreStore::getFileBatch",
                                                 "ScoreStore::findModelId"}

    model = service.score(image("model"))["model"]["sha256"]
    with closing(sqlite3.connect(tmp_path / "copy.sqlite")) as database:
        with closing(sqlite3.connect(f"file:{wiki.root / 'data' / 'testwiki.sqlite'}?mode=ro", uri=True)) as wikis:
            wikis.backup(database)
        for _, sql in queries:  # the first query of a connection also reads the schema
            database.execute(sql).fetchall()
        # Each query finds its rows of both tables through an index: SQLite's plan names one for each.
        for method, sql in queries:
            plan = [row[3] for row in database.execute("EXPLAIN QUERY PLAN " + sql)]
            assert all(" USING " in step for step in plan if re.search(r"\bnsfwoid_(score|model)\b", step)), \
                (method, plan)
        # First more scored files than a batch of scoreFiles.php reads, so that its batches are full from here on.
        add_scores_and_scored_files(database, model, range(1_000))
        before = {query: vm_steps(database, query[1]) for query in queries}
        add_scores_and_scored_files(database, model, range(1_000, 50_000))
        after = {query: vm_steps(database, query[1]) for query in queries}
    assert all(after[query] <= before[query] + 10 for query in after), (before, after)


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


# Every new file version is scored, whichever way it came (the FileUpload hook of LocalFile::recordUpload3).

def stored_rows(wiki, name: str = "testwiki") -> dict[str, tuple[float, str]]:
    """nsfwoid_score, read in the wiki's own database: base-36 SHA-1 → (score, model's sha256)."""
    with closing(sqlite3.connect(f"file:{wiki.root / 'data' / name}.sqlite?mode=ro", uri=True)) as database:
        return {sha1: (score, model) for sha1, score, model in database.execute(
            "SELECT nss_sha1, nss_score, nsm_sha256 FROM nsfwoid_score JOIN nsfwoid_model ON nsm_id = nss_model")}


def score_jobs(wiki, title: str) -> list[str]:
    return [line for line in wiki.php("maintenance/showJobs.php", "--list").stdout.splitlines()
            if line.startswith(f"nsfwoidScore {title} ")]


def test_two_versions_uploaded_before_the_jobs_run_are_both_scored(wiki, service):
    first, second = image("version one"), image("version two", fixture="logo_rgba.png")
    wiki.upload("Two versions.png", first)
    wiki.upload("Two versions.png", second)
    assert len(score_jobs(wiki, "File:Two_versions.png")) == 2  # one job per version, not one per title
    wiki.run_jobs()
    rows = stored_rows(wiki)
    for data in (first, second):
        expected = service.score(data)
        assert rows[expected["sha1_base36"]][0] == pytest.approx(expected["score"], abs=1e-6)


def test_a_file_imported_by_importimages_is_scored(wiki, service, tmp_path):
    data = image("imported")
    (tmp_path / "Imported by script.png").write_bytes(data)
    wiki.php("maintenance/importImages.php", tmp_path, "--extensions=png", "--comment=import")
    assert score_jobs(wiki, "File:Imported_by_script.png")
    wiki.run_jobs()
    assert wiki.score_of("Imported by script.png")["score"] == pytest.approx(service.score(data)["score"], abs=1e-6)


def test_stashed_and_chunked_uploads_are_scored(wiki, service):
    stashed = image("stashed")
    answer = wiki.api("POST", files={"file": ("Stashed.png", stashed)}, action="upload", filename="Stashed.png",
                      stash="1", ignorewarnings="1", token=wiki.token())
    assert not score_jobs(wiki, "File:Stashed.png")  # in the stash, it is no file version yet
    published = wiki.api("POST", action="upload", filename="Stashed.png", filekey=answer["upload"]["filekey"],
                         ignorewarnings="1", token=wiki.token())
    assert published["upload"]["result"] == "Success", published

    chunked, size = image("chunked " + "x" * 4096), 0  # chunks before the last must be 1 KiB at least
    chunk = len(chunked) // 2 + 1
    offset, filekey = 0, None
    while offset < len(chunked):
        part = chunked[offset:offset + chunk]
        params = {"filesize": str(len(chunked)), "offset": str(offset), "stash": "1", "ignorewarnings": "1",
                  **({"filekey": filekey} if filekey else {})}
        answer = wiki.api("POST", files={"chunk": ("Chunked.png", part)}, action="upload", filename="Chunked.png",
                          token=wiki.token(), **params)
        assert "upload" in answer, answer
        filekey, offset, size = answer["upload"]["filekey"], offset + len(part), size + len(part)
    assert size == len(chunked)
    published = wiki.api("POST", action="upload", filename="Chunked.png", filekey=filekey, ignorewarnings="1",
                         token=wiki.token())
    assert published["upload"]["result"] == "Success", published
    wiki.token()  # the jobs are pushed after the answer: php -S answers the next request once that is done

    wiki.run_jobs()
    for name, data in (("Stashed.png", stashed), ("Chunked.png", chunked)):
        assert wiki.score_of(name)["score"] == pytest.approx(service.score(data)["score"], abs=1e-6), name


def test_a_revert_is_a_new_version_and_is_scored_only_when_its_content_has_no_score(wiki, service):
    first, second = image("revert one"), image("revert two", fixture="logo_rgba.png")
    wiki.upload("Reverted.png", first)
    wiki.run_jobs()
    wiki.upload("Reverted.png", second)
    wiki.run_jobs()
    history = wiki.api(action="query", prop="imageinfo", titles="File:Reverted.png", iiprop="archivename|sha1",
                       iilimit="2")["query"]["pages"][0]["imageinfo"]
    archived = next(version for version in history if "archivename" in version)
    reverted = wiki.revert("Reverted.png", archived["archivename"])
    assert reverted["filerevert"]["result"] == "Success", reverted
    wiki.token()
    # The content is the first version's, which has a score of the current model: no job, and that score.
    assert not score_jobs(wiki, "File:Reverted.png")
    assert wiki.score_of("Reverted.png")["score"] == pytest.approx(service.score(first)["score"], abs=1e-6)


def test_an_upload_by_url_is_scored(wiki, service):
    data = image("by url")
    with image_host(data, "image/png") as host, \
            wiki.settings("$wgAllowCopyUploads = true; $wgGroupPermissions['sysop']['upload_by_url'] = true;"):
        answer = wiki.api("POST", action="upload", filename="By URL.png", ignorewarnings="1",
                          url=f"{host}/by-url.png", token=wiki.token())
        wiki.token()
    assert answer.get("upload", {}).get("result") == "Success", answer
    assert score_jobs(wiki, "File:By_URL.png")
    wiki.run_jobs()
    assert wiki.score_of("By URL.png")["score"] == pytest.approx(service.score(data)["score"], abs=1e-6)


def test_an_upload_through_special_upload_is_scored(wiki, service):
    """The form a person fills in, posted as the browser posts it."""
    data = image("special upload")
    posted = wiki.session.post(wiki.url + "/index.php", params={"title": "Special:Upload"}, timeout=120, data={
        "wpEditToken": wiki.form_token("Special:Upload"), "wpDestFile": "Through the form.png", "wpSourceType": "file",
        "wpUploadDescription": "", "wpIgnoreWarning": "1", "wpUpload": "Upload file",
    }, files={"wpUploadFile": ("Through the form.png", data, "image/png")})
    assert posted.status_code == 200 and "File:Through_the_form.png" in posted.url, posted.url
    wiki.token()
    assert score_jobs(wiki, "File:Through_the_form.png")
    wiki.run_jobs()
    assert wiki.score_of("Through the form.png")["score"] == pytest.approx(service.score(data)["score"], abs=1e-6)


def test_a_revert_to_content_without_a_score_is_scored(wiki, service):
    unscored, second = image("never scored"), image("revert later", fixture="logo_rgba.png")
    with wiki.settings("$wgNsfwoidScoreOnUpload = false;"):
        wiki.upload("Reverted unscored.png", unscored)
    wiki.upload("Reverted unscored.png", second)
    wiki.run_jobs()
    history = wiki.api(action="query", prop="imageinfo", titles="File:Reverted unscored.png",
                       iiprop="archivename", iilimit="2")["query"]["pages"][0]["imageinfo"]
    archived = next(version for version in history if "archivename" in version)
    reverted = wiki.revert("Reverted unscored.png", archived["archivename"])
    assert reverted["filerevert"]["result"] == "Success", reverted
    wiki.token()
    assert score_jobs(wiki, "File:Reverted_unscored.png")
    wiki.run_jobs()
    assert wiki.score_of("Reverted unscored.png")["score"] == pytest.approx(service.score(unscored)["score"], abs=1e-6)


# The review queue: list=nsfwscores, for those with the right nsfwoid-review.

def test_the_review_list_filters_orders_and_continues_and_needs_its_right(wiki, service):
    names = [f"Review {number}.png" for number in range(3)]
    for number, name in enumerate(names):
        wiki.upload(name, image(f"review {number}"))  # each scores as high as the HIGH fixture
        time.sleep(1.1)  # one upload a second: their timestamps differ
    wiki.upload("Review low.png", image("review low", fixture="logo_rgba.png"))
    wiki.run_jobs()
    high = service.score(image("review 0"))["score"]
    threshold = f"{high - 0.01:.6f}"

    listed = wiki.api(action="query", list="nsfwscores", nsshow="all", nsminscore=threshold, nslimit="50",
                      nsprop="title|score|sha1|timestamp|user")["query"]["nsfwscores"]
    ours = [entry for entry in listed if entry["title"].startswith("File:Review")]
    assert [entry["title"] for entry in ours] == [f"File:{name}" for name in reversed(names)]  # newest first
    assert all(entry["score"] >= high - 0.01 and entry["user"] == "Admin" for entry in ours)
    assert all(entry["title"] != "File:Review low.png" for entry in listed)
    stamps = [entry["timestamp"] for entry in listed]
    assert stamps == sorted(stamps, reverse=True)

    # One at a time, through continuation, the same files in the same order.
    pages, params = [], {"action": "query", "list": "nsfwscores", "nsminscore": threshold, "nslimit": "1",
                     "nsshow": "all"}
    while True:
        answer = wiki.api(**params)
        pages += [entry["title"] for entry in answer["query"]["nsfwscores"]]
        if "continue" not in answer:
            break
        params.update(answer["continue"])
    assert pages == [entry["title"] for entry in listed]

    # Oldest first, from a start time.
    newer = wiki.api(action="query", list="nsfwscores", nsshow="all", nsminscore=threshold, nsdir="newer",
                     nsstart=ours[1]["timestamp"])["query"]["nsfwscores"]
    assert [entry["title"] for entry in newer][:2] == [f"File:{names[1]}", f"File:{names[2]}"]

    # A deleted file is never listed.
    deleted = wiki.api("POST", action="delete", title=f"File:{names[0]}", token=wiki.token())
    assert "delete" in deleted, deleted
    again = wiki.api(action="query", list="nsfwscores", nsshow="all", nsminscore=threshold,
                     nslimit="50")["query"]["nsfwscores"]
    assert f"File:{names[0]}" not in [entry["title"] for entry in again]

    out_of_range = wiki.api(action="query", list="nsfwscores", nsminscore="2")["error"]
    assert out_of_range["code"] == "badminscore" and "from 0 to 1" in out_of_range["info"], out_of_range

    # Without the right: the standard refusal.
    anonymous = requests.get(wiki.url + "/api.php", timeout=60, params={
        "action": "query", "list": "nsfwscores", "format": "json", "formatversion": "2"}).json()
    assert anonymous["error"]["code"] == "permissiondenied", anonymous


def test_the_review_list_judges_a_file_by_its_current_version(wiki, service):
    """An older version's high score does not list the file; once a high-scoring version is current, it does."""
    high, low = image("versions high"), image("versions low", fixture="logo_rgba.png")
    threshold = f"{service.score(high)['score'] - 0.01:.6f}"

    def listed() -> list[str]:
        return [entry["title"] for entry in wiki.api(action="query", list="nsfwscores", nsshow="all",
                                                      nsminscore=threshold, nslimit="max")["query"]["nsfwscores"]]
    for data in (high, low):
        assert wiki.upload("Versions.png", data)["upload"]["result"] == "Success"
    wiki.run_jobs()
    assert "File:Versions.png" not in listed()
    assert wiki.score_of("Versions.png")["sha1"] == service.score(low)["sha1_base36"]
    assert wiki.upload("Versions.png", high)["upload"]["result"] == "Success"
    assert "File:Versions.png" in listed()  # its content was scored already: no job needed


def test_an_uploader_whose_name_a_block_hides_is_shown_only_to_those_who_may_see_it(wiki, service):
    """As MediaWiki's own lists of users: a hideuser block hides the uploader's name from reviewers without the
    right `hideuser`, in the API and on the review page; the file is still listed for them."""
    with wiki.settings('$wgGroupPermissions["suppress"]["hideuser"] = true;'):
        wiki.as_user(ADMIN, "suppress")
        uploader = wiki.as_user("Hidden uploader")
        reviewer = wiki.as_user("Plain reviewer", "sysop")
        assert uploader.upload("Hidden uploader.png", image("hidden uploader"))["upload"]["result"] == "Success"
        wiki.run_jobs()
        threshold = f"{service.score(image('hidden uploader'))['score'] - 0.01:.6f}"

        def entry(who) -> dict:
            listed = who.api(action="query", list="nsfwscores", nsshow="all", nsminscore=threshold, nslimit="max",
                             nsprop="title|user")["query"]["nsfwscores"]
            return next(item for item in listed if item["title"] == "File:Hidden uploader.png")

        assert entry(reviewer)["user"] == "Hidden uploader"
        blocked = wiki.api("POST", action="block", user="Hidden uploader", expiry="infinite", hidename="1",
                           reason="test", token=wiki.token())
        assert blocked.get("block", {}).get("hidename") is True, blocked
        assert entry(reviewer) == {"ns": 6, "title": "File:Hidden uploader.png", "userhidden": True}
        assert entry(wiki)["user"] == "Hidden uploader"  # the sysop in `suppress` has hideuser

        def review_page(who) -> str:
            return who.session.get(who.url + "/index.php", timeout=60, params={
                "title": "Special:NsfwoidReview", "minscore": threshold, "limit": "500", "show": "all"}).text
        hidden, shown = review_page(reviewer), review_page(wiki)
        assert "File:Hidden_uploader.png" in hidden and "Hidden uploader</a>" not in hidden
        assert "(username removed)" in hidden
        assert "File:Hidden_uploader.png" in shown and "Hidden uploader</a>" in shown


def test_the_review_page_lists_recent_high_scores_blurred_for_sysops_only(wiki, service):
    wiki.upload("Page review.png", image("page review"))
    wiki.upload("Page review low.png", image("page review low", fixture="logo_rgba.png"))
    wiki.run_jobs()
    threshold = service.score(image("page review"))["score"] - 0.01
    page = wiki.session.get(wiki.url + "/index.php", timeout=60,
                            params={"title": "Special:NsfwoidReview", "minscore": f"{threshold:.6f}", "show": "all"})
    assert page.status_code == 200
    assert "File:Page_review.png" in page.text and "File:Page_review_low.png" not in page.text
    assert 'class="nsfwoid-blurred"' in page.text and "ext.nsfwoid.review" in page.text
    unblurred = wiki.session.get(wiki.url + "/index.php", timeout=60, params={
        "title": "Special:NsfwoidReview", "minscore": f"{threshold:.6f}", "blur": "0", "show": "all"})
    assert "File:Page_review.png" in unblurred.text and 'class="nsfwoid-blurred"' not in unblurred.text
    # A reviewer's preference turns the blur off; blur=1 in the URL still blurs.
    assert "Show thumbnails on" in wiki.session.get(wiki.url + "/index.php", timeout=60,
                                                    params={"title": "Special:Preferences"}).text
    assert wiki.api("POST", action="options", change="nsfwoid-review-unblurred=1", token=wiki.token()) == \
        {"options": "success"}
    try:
        preferred, blurred = (wiki.session.get(wiki.url + "/index.php", timeout=60, params={
            "title": "Special:NsfwoidReview", "minscore": f"{threshold:.6f}", "show": "all", **blur}).text
            for blur in ({}, {"blur": "1"}))
    finally:
        wiki.api("POST", action="options", change="nsfwoid-review-unblurred", token=wiki.token())
    assert "File:Page_review.png" in preferred and 'class="nsfwoid-blurred"' not in preferred
    assert 'class="nsfwoid-blurred"' in blurred
    # Listed among the special pages, for those who may use it.
    assert "Special:NsfwoidReview" in wiki.session.get(wiki.url + "/index.php", timeout=60,
                                                       params={"title": "Special:SpecialPages"}).text
    # A user without the right gets the standard permission error, and no file.
    anonymous = requests.get(wiki.url + "/index.php", timeout=60, params={"title": "Special:NsfwoidReview"})
    assert "Permission error" in anonymous.text and "File:Page_review.png" not in anonymous.text


def review_queue(who, threshold: str, prefix: str, show: str = "unreviewed") -> dict[str, bool]:
    """list=nsfwscores as `who` reads it: title → reviewed, for the files whose names start with prefix."""
    entries = who.api(action="query", list="nsfwscores", nsminscore=threshold, nslimit="max", nsshow=show,
                      nsprop="title|reviewed")["query"]["nsfwscores"]
    return {entry["title"]: entry["reviewed"] for entry in entries if entry["title"].startswith(f"File:{prefix}")}


def review_page(who, threshold: str, show: str | None = None) -> str:
    return who.session.get(who.url + "/index.php", timeout=60, params={
        "title": "Special:NsfwoidReview", "minscore": threshold, "limit": "500",
        **({"show": show} if show else {})}).text


def test_a_reviewed_upload_leaves_the_default_queue_and_is_patrolled(wiki, service):
    """Where the wiki patrols uploads (MediaWiki's default), reviewing a file is patrolling its upload: the queue,
    RecentChanges and Special:NewFiles agree, whichever of them the patrol came from. Uploads by users with
    `autopatrol` arrive reviewed. A new version is a new upload to review."""
    uploader = wiki.as_user("Queue uploader")
    data, elsewhere = image("queue"), image("queue elsewhere")
    threshold = f"{service.score(data)['score'] - 0.01:.6f}"
    sha1 = service.score(data)["sha1_base36"]
    for name, content in (("Queue.png", data), ("Queue patrolled elsewhere.png", elsewhere)):
        assert uploader.upload(name, content)["upload"]["result"] == "Success"
    wiki.upload("Queue trusted.png", image("queue trusted"))  # by the sysop, who has autopatrol
    wiki.run_jobs()

    unreviewed = {"File:Queue.png": False, "File:Queue patrolled elsewhere.png": False}
    assert review_queue(wiki, threshold, "Queue") == unreviewed
    assert review_queue(wiki, threshold, "Queue", "all") == {**unreviewed, "File:Queue trusted.png": True}
    page = review_page(wiki, threshold)
    assert "File:Queue.png" in page and "File:Queue_trusted.png" not in page
    assert page.count('class="nsfwoid-review-form"') >= 2
    new_files = wiki.session.get(wiki.url + "/index.php", timeout=60,
                                 params={"title": "Special:NewFiles", "hidepatrolled": "1"}).text
    assert "Queue.png" in new_files and "Queue trusted.png" not in new_files

    # Refusals, each MediaWiki's usual API error; nothing is marked.
    def mark(who, **params) -> dict:
        return who.api("POST", action="nsfwoidreview", **params)
    assert error_code(mark(uploader, title="File:Queue.png", token=uploader.token())) == "permissiondenied"
    assert error_code(mark(wiki, title="File:Queue.png")) == "missingparam"
    assert error_code(mark(wiki, title="File:Queue.png", token="+\\")) == "badtoken"
    assert error_code(mark(wiki, title="File:No such queue file.png", token=wiki.token())) == "nofile"
    assert error_code(mark(wiki, title="File:Queue.png", sha1="0" * 31, token=wiki.token())) == "changed"
    assert review_queue(wiki, threshold, "Queue") == unreviewed

    assert mark(wiki, title="File:Queue.png", sha1=sha1, token=wiki.token())["nsfwoidreview"] == \
        {"title": "File:Queue.png", "sha1": sha1, "reviewed": True}
    assert review_queue(wiki, threshold, "Queue") == {"File:Queue patrolled elsewhere.png": False}
    assert review_queue(wiki, threshold, "Queue", "reviewed") == {"File:Queue.png": True,
                                                                  "File:Queue trusted.png": True}
    assert "File:Queue.png" not in review_page(wiki, threshold) and "File:Queue.png" in review_page(
        wiki, threshold, "all")

    def upload_changes(name: str) -> list[dict]:
        return wiki.api(action="query", list="recentchanges", rctitle=f"File:{name}", rctype="log",
                        rcprop="ids|patrolled|loginfo")["query"]["recentchanges"]
    assert [change["patrolled"] for change in upload_changes("Queue.png")] == [True]
    new_files = wiki.session.get(wiki.url + "/index.php", timeout=60,
                                 params={"title": "Special:NewFiles", "hidepatrolled": "1"}).text
    assert "Queue.png" not in new_files and "Queue patrolled elsewhere.png" in new_files

    # Patrolled as RecentChanges does it: it leaves the queue.
    rcid = upload_changes("Queue patrolled elsewhere.png")[0]["rcid"]
    assert "patrol" in wiki.api("POST", action="patrol", rcid=rcid, token=wiki.token("patrol"))
    assert review_queue(wiki, threshold, "Queue") == {}

    assert uploader.upload("Queue.png", image("queue again"))["upload"]["result"] == "Success"
    wiki.run_jobs()
    assert review_queue(wiki, threshold, "Queue") == {"File:Queue.png": False}


def test_where_uploads_are_not_patrolled_a_review_is_recorded_by_content(wiki, service):
    """With $wgUseFilePatrol off, the extension records reviews in nsfwoid_review, by SHA-1: a copy of reviewed
    bytes is reviewed, a new version with other bytes is not, and autopatrol does not count. The mark works
    without JavaScript, through the page's plain form, which answers with a redirect to the page."""
    data = image("content review")
    threshold = f"{service.score(data)['score'] - 0.01:.6f}"
    with wiki.settings("$wgUseFilePatrol = false;"):
        for name in ("Content review.png", "Content review copy.png"):
            assert wiki.upload(name, data)["upload"]["result"] == "Success"
        wiki.run_jobs()
        unreviewed = {"File:Content review.png": False, "File:Content review copy.png": False}
        assert review_queue(wiki, threshold, "Content") == unreviewed

        page = review_page(wiki, threshold)
        form = re.search(r'<form method="post" action="([^"]+)" class="nsfwoid-review-form">(.*?)</form>', page)
        inputs = [dict(re.findall(r'(\w+)="([^"]*)"', tag)) for tag in re.findall(r"<input [^>]*>", form.group(2))]
        fields = {field["name"]: html.unescape(field["value"]) for field in inputs if field["type"] == "hidden"}
        assert set(fields) == {"wpEditToken", "reviewtitle", "reviewsha1"}, fields
        action = wiki.url + form.group(1).replace("&amp;", "&")
        stale = wiki.session.post(action, data={**fields, "wpEditToken": "+\\"}, timeout=60)
        assert stale.status_code == 200 and "login session" in stale.text  # the session-failure error box
        assert review_queue(wiki, threshold, "Content") == unreviewed

        marked = wiki.session.post(action, data=fields, timeout=60)
        assert [answer.status_code for answer in marked.history] == [302], marked.history
        assert "Special:NsfwoidReview" in marked.url and "Content_review" not in marked.text
        assert review_queue(wiki, threshold, "Content") == {}
        assert review_queue(wiki, threshold, "Content", "reviewed") == {"File:Content review.png": True,
                                                                        "File:Content review copy.png": True}
        with closing(sqlite3.connect(f"file:{wiki.root / 'data' / 'testwiki.sqlite'}?mode=ro", uri=True)) as db:
            reviews = db.execute("SELECT actor_name FROM nsfwoid_review JOIN actor ON actor_id = nsr_actor "
                                 "WHERE nsr_sha1 = ?", (service.score(data)["sha1_base36"],)).fetchall()
        assert reviews == [(ADMIN,)]

        assert wiki.upload("Content review.png", image("content review again"))["upload"]["result"] == "Success"
        wiki.run_jobs()
        assert review_queue(wiki, threshold, "Content") == {"File:Content review.png": False}


# Verdicts, and the thresholds they give: action=nsfwoidreview&verdict=, meta=nsfwthresholds, Special:NsfwoidThresholds.

def test_verdicts_through_the_api_need_the_right_and_a_score_and_are_logged(wiki, service):
    """A reviewer's verdict records the stored score and marks the file reviewed; a later one replaces it, and each
    is logged where only reviewers read. Bad input gets MediaWiki's usual API errors."""
    uploader = wiki.as_user("Verdict uploader")
    data = image("verdict")
    sha1, score = service.score(data)["sha1_base36"], service.score(data)["score"]
    threshold = f"{score - 0.01:.6f}"
    assert uploader.upload("Verdict.png", data)["upload"]["result"] == "Success"
    with wiki.settings("$wgNsfwoidScoreOnUpload = false;"):
        assert uploader.upload("Verdict unscored.png", image("verdict unscored"))["upload"]["result"] == "Success"
    wiki.run_jobs()

    def judge(who, **params) -> dict:
        return who.api("POST", action="nsfwoidreview", **params)
    assert error_code(judge(uploader, title="File:Verdict.png", verdict="explicit",
                            token=uploader.token())) == "permissiondenied"
    assert error_code(judge(wiki, title="File:Verdict.png", verdict="explicit")) == "missingparam"  # the token
    assert error_code(judge(wiki, title="File:Verdict.png", verdict="explicit", token="+\\")) == "badtoken"
    assert error_code(judge(wiki, title="File:Verdict.png", verdict="maybe", token=wiki.token())) == "badvalue"
    assert error_code(judge(wiki, title="File:No such verdict.png", verdict="explicit", token=wiki.token())) == \
        "nofile"
    assert error_code(judge(wiki, title="File:Verdict unscored.png", verdict="explicit", token=wiki.token())) == \
        "noscore"
    assert error_code(judge(wiki, title="File:Verdict.png", verdict="explicit", sha1="0" * 31,
                            token=wiki.token())) == "changed"
    assert review_queue(wiki, threshold, "Verdict") == {"File:Verdict.png": False}

    first = judge(wiki, title="File:Verdict.png", verdict="explicit", sha1=sha1, token=wiki.token())
    assert first["nsfwoidreview"] == {"title": "File:Verdict.png", "sha1": sha1, "verdict": "explicit",
                                       "score": pytest.approx(score, abs=1e-6), "previous": None, "reviewed": True}
    assert review_queue(wiki, threshold, "Verdict") == {}  # a verdict marks the file reviewed
    second = judge(wiki, title="File:Verdict.png", verdict="notexplicit", token=wiki.token())["nsfwoidreview"]
    assert second["verdict"] == "notexplicit" and second["previous"] == "explicit"
    listed = wiki.api(action="query", list="nsfwscores", nsminscore=threshold, nsshow="all",
                      nsprop="title|verdict")["query"]["nsfwscores"]
    assert {"ns": 6, "title": "File:Verdict.png", "verdict": "notexplicit"} in listed

    def log(who) -> dict:
        return who.api(action="query", list="logevents", letype="nsfwoid", letitle="File:Verdict.png",
                       leprop="title|type|user|details")
    entries = log(wiki)["query"]["logevents"]
    assert [(entry["action"], entry["params"]["verdict"], entry["params"].get("previous")) for entry in entries] \
        == [("verdict", "notexplicit", "explicit"), ("verdict", "explicit", None)]
    assert all(entry["user"] == ADMIN and entry["params"]["score"] == f"{score:.3f}" for entry in entries)
    assert log(uploader).get("query", {}).get("logevents", []) == []  # the log is the reviewers' only
    assert error_code(uploader.api(action="query", meta="nsfwthresholds")) == "permissiondenied"


def test_thresholds_from_known_verdicts_agree_with_an_independent_computation(wiki, service, tmp_path):
    """Verdicts of known scores, written into the wiki's table as a wiki with a year of reviews would have them,
    then meta=nsfwthresholds and Special:NsfwoidThresholds: each figure is computed here again from the table, with
    Python's own comparisons and Wilson's formula, and must agree. Too few verdicts: no figure, and the reason."""
    wiki.upload("Thresholds.png", image("thresholds"))
    wiki.run_jobs()  # a score of the current model, the newest
    database = wiki.root / "data" / "testwiki.sqlite"
    with closing(sqlite3.connect(database)) as db, db:
        model = db.execute("SELECT nss_model FROM nsfwoid_score ORDER BY nss_timestamp DESC LIMIT 1").fetchone()[0]
        generator = random.Random(49)
        rows = []
        for n in range(400):  # explicit files score high more often than the others
            explicit = n % 3 == 0
            score = round(min(1.0, max(0.0, generator.gauss(0.75 if explicit else 0.35, 0.2))), 6)
            rows.append((f"verdict{n:024d}", int(explicit), score, model, 1, "20260101000000"))
        rows += [("verdict-grid-1", 1, 0.8, model, 1, "20260101000000"),
                 ("verdict-grid-2", 0, 0.29, model, 1, "20260101000000")]  # exactly on the grid
        db.executemany("INSERT INTO nsfwoid_verdict VALUES (?, ?, ?, ?, ?, ?)", rows)
    with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        verdicts = [(score, bool(explicit)) for score, explicit in db.execute(
            "SELECT nsv_score, nsv_explicit FROM nsfwoid_verdict WHERE nsv_model = ?", (model,))]
        uploads = [score for (score,) in db.execute(
            "SELECT nss_score FROM image JOIN nsfwoid_score ON nss_sha1 = img_sha1 WHERE nss_model = ? "
            "ORDER BY img_timestamp DESC LIMIT 10000", (model,))]

    def wilson(successes: int, n: int) -> dict | None:
        if n == 0:
            return None
        z, p = 1.959964, successes / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        return {"value": pytest.approx(p, abs=1e-9), "low": pytest.approx(max(0.0, centre - half), abs=1e-9),
                "high": pytest.approx(min(1.0, centre + half), abs=1e-9), "n": n}

    explicit_total = sum(explicit for _, explicit in verdicts)

    def expected(k: int) -> dict:
        t = k / 1000
        flagged = [explicit for score, explicit in verdicts if score >= t]
        return {"threshold": pytest.approx(t), "flagged": len(flagged), "explicit": sum(flagged),
                "precision": wilson(sum(flagged), len(flagged)), "recall": wilson(sum(flagged), explicit_total),
                "uploads": {"share": pytest.approx(sum(score >= t for score in uploads) / len(uploads)),
                            "of": len(uploads)}}

    def precision(k: int) -> float:
        flagged = [explicit for score, explicit in verdicts if score >= k / 1000]
        return sum(flagged) / len(flagged) if flagged else -1.0

    def recall(k: int) -> float:
        return sum(explicit for score, explicit in verdicts if score >= k / 1000) / explicit_total

    answer = wiki.api(action="query", meta="nsfwthresholds", ntthresholds="0.29|0.5|0.8|0.123",
                      ntminprecision="0.8|0.9|0.99", ntminrecall="0.5|0.9", ntcurve="1")["query"]["nsfwthresholds"]
    assert answer["enough"] is True and answer["model"] == service.score(image("thresholds"))["model"]["sha256"]
    assert answer["verdicts"] == {"total": len(verdicts), "explicit": explicit_total,
                                  "notexplicit": len(verdicts) - explicit_total}
    assert answer["thresholds"] == [expected(k) for k in (290, 500, 800, 123)]
    for aim in (0.8, 0.9, 0.99):
        k = next((k for k in range(1001) if precision(k) >= aim), None)
        found = next(item for item in answer["maximumrecall"] if item["minprecision"] == aim)
        assert found == ({"minprecision": aim, **expected(k)} if k is not None else
                         {"minprecision": aim, "threshold": None}), aim
    for aim in (0.5, 0.9):
        k = max(k for k in range(1001) if recall(k) >= aim)
        assert next(item for item in answer["maximumprecision"] if item["minrecall"] == aim) == \
            {"minrecall": aim, **expected(k)}
    # From the threshold that flags every verdict to the one that flags the fewest
    assert answer["curve"][0][0] <= min(score for score, _ in verdicts)
    assert answer["curve"][0][1:] == [pytest.approx(explicit_total / len(verdicts)), 1.0]
    assert [point[0] for point in answer["curve"]] == sorted(point[0] for point in answer["curve"])
    assert all(0 <= point[1] <= 1 and 0 <= point[2] <= 1 for point in answer["curve"])

    page = wiki.session.get(wiki.url + "/index.php", timeout=60,
                            params={"title": "Special:NsfwoidThresholds", "threshold": "0.8"}).text
    figures = expected(800)
    assert "<svg" in page and "<polyline" in page and 'class="nsfwoid-curve-mark"' in page
    assert f"{figures['precision']['value'].expected:.3f} ({figures['precision']['low'].expected:.3f}–" in page
    assert "Highest recall at precision ≥ 0.9" in page
    assert "not a threshold" in wiki.session.get(wiki.url + "/index.php", timeout=60, params={
        "title": "Special:NsfwoidThresholds", "threshold": "0.8001"}).text
    assert error_code(wiki.api(action="query", meta="nsfwthresholds", ntthresholds="2")) == "badthresholds"

    with wiki.settings(f"$wgNsfwoidMinVerdicts = {len(verdicts) + 1};"):
        short = wiki.api(action="query", meta="nsfwthresholds")["query"]["nsfwthresholds"]
        assert short["enough"] is False and short["minimum"] == len(verdicts) + 1
        assert "thresholds" not in short and "maximumrecall" not in short
        page = wiki.session.get(wiki.url + "/index.php", timeout=60,
                                params={"title": "Special:NsfwoidThresholds"}).text
        assert "Not enough data" in page and "<svg" not in page
    anonymous = requests.get(wiki.url + "/index.php", timeout=60, params={"title": "Special:NsfwoidThresholds"})
    assert "Permission error" in anonymous.text and "<svg" not in anonymous.text


def test_update_php_migrates_a_wiki_on_the_first_schema_keeping_every_score(make_wiki, service):
    """A wiki that stored scores on the first schema, each row naming its model by 64 bytes of hex, runs update.php:
    every score is kept, its model becomes an id of nsfwoid_model, and the API, the review list and the filters
    read the scores. The stored scores differ from what the service would answer, so each read shows where it
    came from. There are more rows than a batch of the migration."""
    old = make_wiki("oldwiki", extensions="AbuseFilter")
    high, low = image("migrated high"), image("migrated low", fixture="logo_rgba.png")
    with old.settings("$wgNsfwoidScoreOnUpload = false;"):
        for name, data in (("Migrated high.png", high), ("Migrated low.png", low)):
            assert old.upload(name, data)["upload"]["result"] == "Success"
    current = service.score(high)["model"]["sha256"]
    retired = "a" * 64
    rows = {service.score(high)["sha1_base36"]: (0.97, current), service.score(low)["sha1_base36"]: (0.05, current),
            **{f"m{n:030d}": (n / 2500, current if n % 3 else retired) for n in range(2500)}}
    database_path = old.root / "data" / "oldwiki.sqlite"
    with closing(sqlite3.connect(database_path)) as database, database:
        database.executescript("DROP TABLE nsfwoid_score; DROP TABLE nsfwoid_model; DROP TABLE nsfwoid_review; "
                               "DROP TABLE nsfwoid_verdict;" + FIRST_SCHEMA.read_text().replace("/*_*/", ""))
        database.executemany("INSERT INTO nsfwoid_score VALUES (?, ?, ?, ?)", [
            (sha1, score, model, "20190101000000" if model == retired else f"2024{n % 12 + 1:02d}01000000")
            for n, (sha1, (score, model)) in enumerate(rows.items())])

    migrated = old.php("maintenance/update.php", "--quick").stdout
    assert f"Giving model {current} the id" in migrated and f"Giving model {retired} the id" in migrated
    assert "Creating nsfwoid_review table...done." in migrated  # reviews, where uploads are not patrolled
    assert "Creating nsfwoid_verdict table...done." in migrated
    assert stored_rows(old, "oldwiki") == rows
    with closing(sqlite3.connect(f"file:{database_path}?mode=ro", uri=True)) as database:
        models = dict(database.execute("SELECT nsm_sha256, nsm_first_seen FROM nsfwoid_model"))
        columns = {row[1]: row[2] for row in database.execute("PRAGMA table_info(nsfwoid_score)")}
        indexes = {row[1] for row in database.execute("PRAGMA index_list(nsfwoid_score)")}
        stored_types = set(database.execute("SELECT DISTINCT typeof(nss_model) FROM nsfwoid_score"))
    assert models == {retired: "20190101000000", current: "20240101000000"}  # first seen at its oldest score
    # MediaWiki 1.39 writes SMALLINT UNSIGNED as INTEGER for SQLite; 1.43 keeps the declared type, which SQLite
    # gives integer affinity all the same.
    declared = "INTEGER" if old.mediawiki.release < (1, 43) else "SMALLINT UNSIGNED"
    assert columns["nss_model"] == declared and stored_types == {("integer",)}
    assert "nss_model_sha1" not in indexes and "nss_timestamp" in indexes
    # Run again, update.php changes nothing.
    assert "already names each model by its id" in old.php("maintenance/update.php", "--quick").stdout
    assert stored_rows(old, "oldwiki") == rows

    assert old.score_of("Migrated high.png") == {**old.score_of("Migrated high.png"), "score": 0.97, "model": current}
    listed = old.api(action="query", list="nsfwscores", nsminscore="0.9", nsshow="all")["query"]["nsfwscores"]
    assert [(entry["title"], entry["score"]) for entry in listed] == [("File:Migrated high.png", 0.97)]
    old.add_filter("Explicit image added to a page", 'action == "edit" & added_files_nsfw_score > 0.9')
    assert error_code(old.edit("Migrated high target", "[[File:Migrated high.png]]")) == DISALLOWED
    assert old.edit("Migrated low target", "[[File:Migrated low.png]]")["edit"]["result"] == "Success"

    # A new score of the current model takes its id, and gives it the name the service gives.
    new = image("migrated new")
    old.upload("Migrated new.png", new)
    old.run_jobs()
    assert stored_rows(old, "oldwiki")[service.score(new)["sha1_base36"]] == \
        (pytest.approx(service.score(new)["score"], abs=1e-6), current)
    with closing(sqlite3.connect(f"file:{database_path}?mode=ro", uri=True)) as database:
        names = dict(database.execute("SELECT nsm_sha256, nsm_name FROM nsfwoid_model"))
    assert names == {retired: "", current: service.score(new)["model"]["name"]}


MIGRATION_CHECK = """
$store = MediaWiki\\MediaWikiServices::getInstance()->getService( 'Nsfwoid.ScoreStore' );
$store->save( new MediaWiki\\Extension\\Nsfwoid\\ServiceScore( 0.25, 'sha1new', '{current}', 'open_nsfw' ) );
echo json_encode( [
    'rows' => $store->getRows( [ 'sha1high', 'sha1low', 'sha1retired', 'sha1new' ] ),
    'current' => $store->getScores( [ 'sha1high', 'sha1low', 'sha1retired', 'sha1new' ], '{current}' ),
    'newest' => $store->getNewestModel(),
] ), "\\n";
"""


@pytest.mark.parametrize("db_type", ["mysql", "postgres"])
def test_update_php_migrates_the_first_schema_on_mysql_and_postgresql(database_wiki, db_type):
    """The same migration on the two other databases MediaWiki supports, through maintenance scripts: a wiki
    installed on MariaDB or PostgreSQL, its table put back on the first schema (that version's generated SQL) with
    scores of two models, update.php twice, then the extension's own reads and a new score."""
    wiki = database_wiki(db_type)

    def php(script: str, *args: str, stdin: str | None = None) -> str:
        return wiki.php(script, *args, stdin=stdin).stdout

    current, retired = "c" * 64, "a" * 64
    stamps = {"20240101000000": "2024-01-01 00:00:00+00", "20240301000000": "2024-03-01 00:00:00+00",
              "20190101000000": "2019-01-01 00:00:00+00"}
    rows = {"sha1high": (0.97, current, "20240101000000"), "sha1low": (0.05, current, "20240301000000"),
            "sha1retired": (0.5, retired, "20190101000000")}
    php("maintenance/sql.php", "--query", "DROP TABLE nsfwoid_score")
    php("maintenance/sql.php", "--query", "DROP TABLE nsfwoid_model")
    php("maintenance/sql.php", "--query", "DROP TABLE nsfwoid_review")
    php("maintenance/sql.php", "--query", "DROP TABLE nsfwoid_verdict")
    php("maintenance/sql.php", str(FIXTURES / f"first-schema-{db_type}.sql"))
    php("maintenance/sql.php", "--query", "INSERT INTO nsfwoid_score VALUES " + ", ".join(
        f"('{sha1}', {score}, '{model}', '{stamps[stamp] if db_type == 'postgres' else stamp}')"
        for sha1, (score, model, stamp) in rows.items()))

    migrated = php("maintenance/update.php", "--quick")
    assert f"Giving model {current} the id" in migrated and f"Giving model {retired} the id" in migrated
    assert "Dropping nss_model_sha1 index from table nsfwoid_score...done." in migrated
    assert "Creating nsfwoid_review table...done." in migrated and "Creating nsfwoid_verdict table...done." in migrated
    again = php("maintenance/update.php", "--quick")
    assert "already names each model by its id" in again and "nss_model_sha1 key doesn't exist" in again
    assert "nsfwoid_review table already exists" in again
    php("maintenance/sql.php", "--query", "INSERT INTO nsfwoid_review VALUES ('sha1high', 1, '"
        + (stamps["20240101000000"] if db_type == "postgres" else "20240101000000") + "')")
    assert json.loads(php("maintenance/sql.php", "--json", "--query", "SELECT nsr_sha1 FROM nsfwoid_review")) == \
        [{"nsr_sha1": "sha1high"}]
    php("maintenance/sql.php", "--query", "INSERT INTO nsfwoid_verdict VALUES ('sha1high', 1, 0.97, 1, 1, '"
        + (stamps["20240101000000"] if db_type == "postgres" else "20240101000000") + "')")
    assert json.loads(php("maintenance/sql.php", "--json", "--query", "SELECT nsv_explicit FROM nsfwoid_verdict")) \
        == [{"nsv_explicit": "1"}]  # as the driver gives it

    check = " ".join(MIGRATION_CHECK.format(current=current).splitlines())  # eval.php runs each line on its own
    read = json.loads(php("maintenance/eval.php", stdin=check).split()[-1])
    assert {sha1: (row["score"], row["model"], row["timestamp"]) for sha1, row in read["rows"].items()} == {
        **{sha1: (score, model, f"{stamp[:4]}-{stamp[4:6]}-{stamp[6:8]}T00:00:00Z")
           for sha1, (score, model, stamp) in rows.items()},
        "sha1new": (0.25, current, read["rows"]["sha1new"]["timestamp"])}
    assert read["current"] == {"sha1high": 0.97, "sha1low": 0.05, "sha1new": 0.25}
    assert read["newest"] == current
    models = json.loads(php("maintenance/sql.php", "--json", "--query",
                            "SELECT nsm_sha256, nsm_name FROM nsfwoid_model"))
    assert {model["nsm_sha256"]: model["nsm_name"] for model in models} == {current: "open_nsfw", retired: ""}


def test_in_a_browser_thumbnails_are_blurred_until_a_click_reveals_one_and_rows_are_judged(wiki, service, tmp_path):
    """Debian's chromium, driven by chromedriver: the page as a patroller sees it. Screenshots are saved beside
    the test's temporary files."""
    from selenium import webdriver
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.chrome.service import Service as ChromeDriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    uploader = wiki.as_user("Browser uploader")
    uploader.upload("Browser review.png", image("browser review"))
    uploader.upload("Browser verdict.png", image("browser verdict"))
    wiki.run_jobs()
    threshold = service.score(image("browser review"))["score"] - 0.01
    review = f"{wiki.url}/index.php?title=Special:NsfwoidReview&minscore={threshold:.6f}"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900"):
        options.add_argument(argument)
    # Both paths given: Selenium Manager, which would look for drivers online, is never run.
    browser = webdriver.Chrome(service=ChromeDriver(CHROMEDRIVER), options=options)
    try:
        # The sysop logs in through the form, in a session of the browser's own
        browser.get(wiki.url + "/index.php?title=Special:UserLogin")
        browser.find_element(By.ID, "wpName1").send_keys(ADMIN)
        browser.find_element(By.ID, "wpPassword1").send_keys(PASSWORD)
        browser.find_element(By.ID, "wpLoginAttempt").click()
        WebDriverWait(browser, 30).until(lambda b: "Special:UserLogin" not in b.current_url)
        browser.get(review)
        WebDriverWait(browser, 30).until(
            lambda b: b.execute_script("return window.mw && mw.loader.getState('ext.nsfwoid.review')") == "ready")
        link = browser.find_element(By.XPATH, "//a[contains(@href, 'Browser_review.png')]/ancestor::tr")
        thumbnail = link.find_element(By.CSS_SELECTOR, ".nsfwoid-blurred img")
        blurred = browser.execute_script("return getComputedStyle(arguments[0]).filter", thumbnail)
        assert blurred.startswith("blur("), blurred
        browser.save_screenshot(str(tmp_path / "review-blurred.png"))

        thumbnail.click()
        assert browser.execute_script("return getComputedStyle(arguments[0]).filter", thumbnail) == "none"
        assert "Special:NsfwoidReview" in browser.current_url  # the first click reveals, and does not leave
        browser.save_screenshot(str(tmp_path / "review-revealed.png"))

        # Marked reviewed through the API: the row says so, and the page was not loaded again.
        browser.execute_script("window.nsfwoidStillHere = true;")
        def wait_for(condition):
            """Until the condition holds; if it never does, what the page notified (an API call's error)."""
            try:
                WebDriverWait(browser, 30).until(condition)
            except TimeoutException:
                browser.save_screenshot(str(tmp_path / "review-timeout.png"))
                said = browser.execute_script("return window.notified")
                raise AssertionError(f"timed out; the page notified {said}") from None
        browser.execute_script("window.notified = []; const notify = mw.notify; mw.notify = function (message) {"
                               " window.notified.push($('<div>').append(message).text());"
                               " return notify.apply(this, arguments); };")
        link.find_element(By.CSS_SELECTOR, ".nsfwoid-review-form button[name=reviewmark]").click()
        wait_for(lambda b: link.find_elements(By.CSS_SELECTOR, ".nsfwoid-reviewed"))
        assert browser.execute_script("return window.nsfwoidStillHere === true")
        assert "nsfwoid-row-reviewed" in link.get_attribute("class")
        # A verdict, the same way
        judged = browser.find_element(By.XPATH, "//a[contains(@href, 'Browser_verdict.png')]/ancestor::tr")
        judged.find_element(By.CSS_SELECTOR, ".nsfwoid-review-form button[value=explicit]").click()
        wait_for(lambda b: judged.find_element(By.CSS_SELECTOR, ".nsfwoid-verdict").text == "Explicit")
        assert browser.execute_script("return window.nsfwoidStillHere === true")
        browser.save_screenshot(str(tmp_path / "review-marked.png"))
        listed = wiki.api(action="query", list="nsfwscores", nsminscore=f"{threshold:.6f}", nsshow="all",
                          nsprop="title|verdict|reviewed")["query"]["nsfwscores"]
        assert {"ns": 6, "title": "File:Browser verdict.png", "verdict": "explicit", "reviewed": True} in listed
        browser.get(review)  # the default view leaves it out
        WebDriverWait(browser, 30).until(lambda b: b.execute_script("return document.readyState") == "complete")
        assert "Special:NsfwoidReview" in browser.current_url
        assert "Browser_review.png" not in browser.page_source and "Browser_verdict.png" not in browser.page_source

        browser.delete_all_cookies()  # a reader without the right
        browser.get(review)
        assert "Permission error" in browser.page_source and "Browser_review.png" not in browser.page_source
        browser.save_screenshot(str(tmp_path / "review-refused.png"))
    finally:
        browser.quit()
    assert all((tmp_path / f"review-{name}.png").stat().st_size > 0
               for name in ("blurred", "revealed", "marked", "refused"))
