"""The size of the MediaWiki extension's score table in MySQL/MariaDB (InnoDB), on the first schema and on the
present one, per row and at Commons' 113 million files.

It creates both tables from their generated MySQL SQL (`mediawiki/tests/fixtures/first-schema-mysql.sql`, which a
test checks against the abstract schema change, and `mediawiki/Nsfwoid/sql/mysql/tables-generated.sql`), fills each
with the same rows in random key order, as base-36 SHA-1s arrive, and reads InnoDB's allocated sizes after
ANALYZE TABLE. It needs a MariaDB or MySQL server that `mysql` reaches without options (root on its socket, as
Debian's mariadb-server sets up), and drops its database when done.

    python3 benchmarks/score_table_size.py [--rows 1000000]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = {
    "first": ROOT / "mediawiki" / "tests" / "fixtures" / "first-schema-mysql.sql",
    "now": ROOT / "mediawiki" / "Nsfwoid" / "sql" / "mysql" / "tables-generated.sql",
}
COMMONS_FILES = 113_000_000
DATABASE = "nsfwoid_table_size"
BATCH = 5_000
DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"
MODELS = ["864bb37bf8863564b87eb330ab8c785a79a773f4e7c43cb96db52ed8611305fa", "a" * 64]


def mysql(sql: str, database: str | None = None) -> str:
    return subprocess.run(["mysql", "--batch", "--skip-column-names", *([database] if database else [])],
                          input=sql, capture_output=True, text=True, check=True).stdout


def table_sql(path: Path) -> str:
    return path.read_text().replace("/*_*/", "").replace("/*$wgDBTableOptions*/", "ENGINE=InnoDB")


def rows(count: int, seed: int = 1) -> list[tuple[str, float, int, str]]:
    """(base-36 SHA-1 of 31 digits, score, model number, timestamp), in random key order; most of the newest model."""
    chooser = random.Random(seed)
    return [("".join(chooser.choices(DIGITS, k=31)), chooser.random(), int(chooser.random() < 0.1),
             f"2026{chooser.randint(1, 12):02d}{chooser.randint(1, 28):02d}120000") for _ in range(count)]


def fill(schema: str, data: list[tuple[str, float, int, str]]) -> None:
    statements = []
    if schema == "now":
        statements.append("INSERT INTO nsfwoid_model (nsm_id, nsm_sha256, nsm_name, nsm_first_seen) VALUES "
                          + ", ".join(f"({number + 1}, '{sha256}', 'open_nsfw', '20260101000000')"
                                      for number, sha256 in enumerate(MODELS)) + ";")
    for start in range(0, len(data), BATCH):
        values = ", ".join(
            f"('{sha1}', {score:.6f}, {number + 1 if schema == 'now' else repr(MODELS[number])}, '{timestamp}')"
            for sha1, score, number, timestamp in data[start:start + BATCH])
        statements.append(f"INSERT INTO nsfwoid_score VALUES {values};")
    mysql("\n".join(statements), DATABASE)


def measure(schema: str, data: list[tuple[str, float, int, str]]) -> dict[str, float]:
    mysql(f"DROP DATABASE IF EXISTS {DATABASE}; CREATE DATABASE {DATABASE};")
    mysql(table_sql(SCHEMAS[schema]), DATABASE)
    fill(schema, data)
    mysql("ANALYZE TABLE nsfwoid_score;", DATABASE)
    table, indexes = map(int, mysql(
        "SELECT data_length, index_length FROM information_schema.tables "
        f"WHERE table_schema = '{DATABASE}' AND table_name = 'nsfwoid_score';").split())
    return {"table_bytes_per_row": table / len(data), "index_bytes_per_row": indexes / len(data),
            "bytes_per_row": (table + indexes) / len(data),
            "table_gib_at_commons": table / len(data) * COMMONS_FILES / 2**30,
            "indexes_gib_at_commons": indexes / len(data) * COMMONS_FILES / 2**30,
            "total_gib_at_commons": (table + indexes) / len(data) * COMMONS_FILES / 2**30}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--output", type=Path, default=Path(__file__).with_name("score_table_size.json"))
    args = parser.parse_args()
    data = rows(args.rows)
    try:
        results = {schema: measure(schema, data) for schema in SCHEMAS}
    finally:
        mysql(f"DROP DATABASE IF EXISTS {DATABASE};")
    results["server"] = mysql("SELECT VERSION();").strip()
    results["rows"] = args.rows
    results["now_over_first"] = results["now"]["bytes_per_row"] / results["first"]["bytes_per_row"]
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
