"""The extension's tables: the SQL generated from the abstract schema, update.php's tables and migrations,
and queries that do not grow with the wiki."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
from contextlib import closing
from pathlib import Path

import pytest

from mediawiki.tests.wiki_helpers import (
    DISALLOWED,
    EXTENSION,
    FIRST_SCHEMA,
    FIXTURES,
    MIGRATION_CHECK,
    SCORE_FILES,
    add_scores_and_scored_files,
    error_code,
    generate_sql,
    image,
    sql_logged_to,
    stored_rows,
    vm_steps,
)


def test_every_php_file_passes_php_lint(mediawiki):
    files = sorted(Path(__file__).parents[1].rglob("*.php"))
    assert len(files) >= 12
    for path in files:
        result = subprocess.run([*mediawiki.php, "-l", str(path)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr


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
    """The change files repeat tables.json, and start from the table that a wiki on the sha256-keyed schema has."""
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


def test_update_php_migrates_a_wiki_on_the_first_schema_keeping_every_score(make_wiki, service):
    """A wiki that stored scores on the sha256-keyed schema, each row naming its model by 64 bytes of hex, runs
    update.php: every score is kept, its model becomes an id of nsfwoid_model, and the API, the review list and
    the filters read the scores. The stored scores differ from what the service would answer, so each read shows
    where it came from. There are more rows than a batch of the migration."""
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


@pytest.mark.parametrize("db_type", ["mysql", "postgres"])
def test_update_php_migrates_the_first_schema_on_mysql_and_postgresql(database_wiki, db_type):
    """The same migration on the two other databases MediaWiki supports, through maintenance scripts: a wiki
    installed on MariaDB or PostgreSQL, its table put back on the sha256-keyed schema (that version's generated
    SQL) with scores of two models, update.php twice, then the extension's own reads and a new score."""
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
