"""AbuseFilter: the variables, filters that stop edits and uploads, the edit's time budget and backoff, and the
counters that report the service's failures."""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing

import pytest

from mediawiki.tests.wiki_helpers import (
    DISALLOWED,
    LOW,
    SCORE_FILES,
    FailingService,
    SlowService,
    StatsListener,
    counting_parses,
    error_code,
    image,
    too_many_pixels,
)
from tests.images import FIDELITY
from tests.processes import HungService, free_port


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
    assert "nsfwoidScore File:On_demand.png" not in wiki.php("maintenance/showJobs.php", "--list").stdout
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
