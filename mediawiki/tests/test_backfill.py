"""The backfill: scoreFiles.php, with and without the job queue, and jobs that fail and retry."""

from __future__ import annotations

import re
import subprocess
import time

from mediawiki.tests.wiki_helpers import EXTENSION, SCORE_FILES, image, output_until, sql_logged_to, too_many_pixels


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
