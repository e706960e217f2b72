"""Every version of every file is scored: uploads of every kind, versions, reverts, what the service cannot
read, and files from a foreign repository (Commons)."""

from __future__ import annotations

import re
import sqlite3
from contextlib import closing

import pytest
import requests

from mediawiki.tests.wiki_helpers import (
    DISALLOWED,
    PDF,
    SCORE_FILES,
    Service,
    big_jpeg,
    error_code,
    image,
    score_jobs,
    sql_logged_to,
    stored_rows,
    svg,
)
from nsfwoid.scoring.bf16 import bf16_refusal
from tests.images import FIDELITY
from tests.upstreams import image_host


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


@pytest.mark.skipif(bf16_refusal() is not None, reason=f"this machine cannot run bf16: {bf16_refusal()}")
def test_a_service_run_in_bf16_scores_as_another_model(wiki, service):
    """NSFWOID_PRECISION=bf16 is another model: the fp32 score counts as missing, the backfill scores the file
    again, and the new model has a row of its own, named with its precision."""
    bf16 = Service("127.0.0.1", NSFWOID_PRECISION="bf16")
    try:
        data = image("precision")
        wiki.upload("Precision.png", data)
        wiki.run_jobs()
        fp32 = wiki.score_of("Precision.png")
        assert fp32["model"] == service.score(data)["model"]["id"]
        answer = bf16.score(data)
        assert answer["model"]["id"] != fp32["model"]
        with wiki.settings(f'$wgNsfwoidServiceUrl = "{bf16.url}";'):
            backfill = wiki.php(SCORE_FILES, "--start", "Precision", "--batch-size", "1").stdout
            stored = wiki.score_of("Precision.png")
        assert "scored 1" in backfill, backfill
        assert stored["model"] == answer["model"]["id"]
        assert stored["score"] == pytest.approx(answer["score"], abs=1e-6)
        names = wiki.php("maintenance/sql.php", "--query",
                         f"SELECT nsm_name FROM nsfwoid_model WHERE nsm_sha256 = '{stored['model']}'").stdout
        assert "open_nsfw bf16" in names, names
    finally:
        bf16.stop()
