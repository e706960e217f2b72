<?php
// What generateSchemaSql.php needs beyond MediaWiki's Debian package, which does not bundle these
// composer libraries: Debian ships them as php-doctrine-dbal, php-sql-formatter, jsonlint and
// php-json-schema.
require_once '/usr/share/php/Doctrine/DBAL/autoload.php';
require_once '/usr/share/php/Doctrine/SqlFormatter/autoload.php';
require_once '/usr/share/php/Seld/JsonLint/autoload.php';
require_once '/usr/share/php/JsonSchema/autoload.php';
