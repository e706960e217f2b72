<?php

namespace MediaWiki\Extension\Nsfwoid;

use BagOStuff;
use File;
use FormatJson;
use LocalRepo;
use MediaWiki\Config\ServiceOptions;
use MediaWiki\Http\HttpRequestFactory;
use Wikimedia\Rdbms\IDatabase;

/**
 * Scores that a foreign repository's own wiki has stored. When Commons runs Nsfwoid, a Commons
 * file that a wiki uses needs no download and no call to the service, and a file the service
 * cannot read, which Commons scored by a thumbnail, has a score at all.
 *
 * - A repository with its own database (ForeignDBViaLBRepo, as Wikimedia's wikis reach Commons,
 *   or ForeignDBRepo): its wiki's table is read on its replica, and nothing is copied here.
 * - A ForeignAPIRepo with an `apibase` in $wgForeignFileRepos: its wiki is asked through its
 *   Action API (prop=nsfwscore), and what it answers is stored here too.
 */
class ForeignScores {

	public const CONSTRUCTOR_OPTIONS = [ 'ForeignFileRepos' ];

	/** The API's limit of titles per query, for a client without apihighlimits. */
	private const TITLES_PER_QUERY = 50;

	/** How long this server trusts what it found of a repository wiki's table, seconds. */
	private const TABLE_CHECK_TTL = BagOStuff::TTL_HOUR;

	/** @var string[] API URL by repository name */
	private array $apiUrls = [];
	private HttpRequestFactory $httpRequestFactory;
	private ScoreStore $store;
	private BagOStuff $localServerCache;

	public function __construct(
		ServiceOptions $options,
		HttpRequestFactory $httpRequestFactory,
		ScoreStore $store,
		BagOStuff $localServerCache
	) {
		$options->assertRequiredOptions( self::CONSTRUCTOR_OPTIONS );
		foreach ( $options->get( 'ForeignFileRepos' ) as $info ) {
			if ( isset( $info['name'], $info['apibase'] ) ) {
				$this->apiUrls[$info['name']] = $info['apibase'];
			}
		}
		$this->httpRequestFactory = $httpRequestFactory;
		$this->store = $store;
		$this->localServerCache = $localServerCache;
	}

	/**
	 * @param File[] $files files of foreign repositories
	 * @param string $model only scores of this model count
	 * @param float $timeout seconds, for all the queries together
	 * @return float[] score by SHA-1 (base 36), for the files whose repository had one
	 */
	public function getScores( array $files, string $model, float $timeout ): array {
		$deadline = microtime( true ) + $timeout;
		$byUrl = [];
		foreach ( $files as $file ) {
			$url = $this->apiUrls[$file->getRepoName()] ?? null;
			if ( $url !== null && !self::hasOwnDatabase( $file ) ) {
				$byUrl[$url][$file->getName()] = $file;
			}
		}
		$scores = [];
		foreach ( self::byDatabase( $files ) as $repoFiles ) {
			$db = $this->tableDatabase( $repoFiles[0] );
			if ( $db ) {
				$scores += $this->store->getScores( self::sha1s( $repoFiles ), $model, $db );
			}
		}
		foreach ( $byUrl as $url => $filesByName ) {
			foreach ( array_chunk( $filesByName, self::TITLES_PER_QUERY, true ) as $chunk ) {
				foreach ( $this->query( $url, array_keys( $chunk ), $deadline - microtime( true ) ) as $page ) {
					$file = $chunk[strtr( explode( ':', $page['title'] ?? '', 2 )[1] ?? '', ' ', '_' )] ?? null;
					$score = ServiceScore::newFromApiRow( $page['nsfwscore'] ?? null );
					if ( $file && $score && $score->model === $model && $score->sha1 === $file->getSha1() ) {
						$this->store->save( $score );
						$scores[$score->sha1] = $score->score;
					}
				}
			}
		}
		return $scores;
	}

	/**
	 * The rows, whatever their model, that the wikis of database repositories stored for these
	 * files, for readers such as the API. Files of other repositories are left out.
	 *
	 * @param File[] $files
	 * @return array[] by SHA-1 (base 36), as ScoreStore::getRows()
	 */
	public function getRows( array $files ): array {
		$rows = [];
		foreach ( self::byDatabase( $files ) as $repoFiles ) {
			$db = $this->tableDatabase( $repoFiles[0] );
			if ( $db ) {
				$rows += $this->store->getRows( self::sha1s( $repoFiles ), $db );
			}
		}
		return $rows;
	}

	/**
	 * @param File[] $files
	 * @return File[][] the files of repositories that have their own database, by repository
	 */
	private static function byDatabase( array $files ): array {
		$byRepo = [];
		foreach ( $files as $file ) {
			if ( self::hasOwnDatabase( $file ) ) {
				$byRepo[$file->getRepoName()][] = $file;
			}
		}
		return $byRepo;
	}

	/**
	 * Whether the file is of a foreign repository reached through its wiki's database
	 * (ForeignDBViaLBRepo, ForeignDBRepo: both are LocalRepos of another wiki).
	 */
	private static function hasOwnDatabase( File $file ): bool {
		return !$file->isLocal() && $file->getRepo() instanceof LocalRepo;
	}

	/**
	 * The replica of the file's repository, if its wiki has the tables (nsfwoid_model marks a wiki
	 * that has run update.php for model ids). A failed query would leave the connection's
	 * transaction in error, so a wiki that does not run Nsfwoid is not asked. The answer is kept on
	 * this server for an hour: edits do not each pay a metadata query.
	 */
	private function tableDatabase( File $file ): ?IDatabase {
		$db = $file->getRepo()->getReplicaDB();
		$hasTable = $this->localServerCache->getWithSetCallback(
			$this->localServerCache->makeGlobalKey( 'nsfwoid-model-table', $db->getDomainID() ),
			self::TABLE_CHECK_TTL,
			// An int: false would read as a miss, and not be kept.
			static fn () => (int)$db->tableExists( 'nsfwoid_model', __METHOD__ )
		);
		return $hasTable ? $db : null;
	}

	private static function sha1s( array $files ): array {
		return array_map( static fn ( File $file ) => $file->getSha1(), $files );
	}

	/**
	 * @param string $url the repository's api.php
	 * @param string[] $names file names
	 * @param float $timeout seconds
	 * @return array[] the answer's pages; none when it failed or the time is up
	 */
	private function query( string $url, array $names, float $timeout ): array {
		if ( $timeout <= 0 ) {
			return [];
		}
		$request = $this->httpRequestFactory->create( wfAppendQuery( $url, [
			'action' => 'query', 'prop' => 'nsfwscore', 'format' => 'json', 'formatversion' => '2',
			'titles' => implode( '|', array_map( static fn ( $name ) => "File:$name", $names ) ),
		] ), [ 'method' => 'GET', 'timeout' => $timeout, 'connectTimeout' => $timeout ], __METHOD__ );
		if ( !$request->execute()->isOK() ) {
			return [];
		}
		$answer = FormatJson::decode( (string)$request->getContent(), true );
		$pages = is_array( $answer ) ? $answer['query']['pages'] ?? [] : [];
		return is_array( $pages ) ? array_filter( $pages, 'is_array' ) : [];
	}
}
