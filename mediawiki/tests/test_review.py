"""The review queue: the list, the page, hiding blocks, reviews that empty it, verdicts, thresholds, and the
page in a browser."""

from __future__ import annotations

import html
import math
import random
import re
import sqlite3
import time
from contextlib import closing

import pytest
import requests

from mediawiki.tests.wiki_helpers import (
    ADMIN,
    CHROMEDRIVER,
    CHROMIUM,
    PASSWORD,
    error_code,
    image,
    review_page,
    review_queue,
)


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


@pytest.mark.browser
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
