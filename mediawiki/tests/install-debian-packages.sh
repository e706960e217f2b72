#!/usr/bin/env bash
# What the MediaWiki end-to-end tests need, as root on Debian 12: MediaWiki 1.39 with AbuseFilter, PHP's
# SQLite and curl, ImageMagick for the wiki's thumbnails, chromium and chromedriver for the review page,
# MariaDB and PostgreSQL (with PHP's drivers) for the schema migration, and the libraries that
# maintenance/generateSchemaSql.php needs but the package does not bundle. The database services are
# started by the test that uses them. Debian ships the abstract schema's JSON schemas gzipped under
# /usr/share/doc; the validator reads them from MediaWiki's docs/.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq mediawiki imagemagick php-cli php-sqlite3 php-curl php-intl php-mbstring \
    php-xml php-doctrine-dbal php-sql-formatter jsonlint php-json-schema chromium chromium-driver \
    mariadb-server postgresql php-mysql php-pgsql >/dev/null
mkdir -p /usr/share/mediawiki/docs
for schema in abstract-schema.schema.json abstract-schema-changes.schema.json abstract-schema-table.json; do
    zcat -f /usr/share/doc/mediawiki/docs/"$schema"* > /usr/share/mediawiki/docs/"$schema"
done
