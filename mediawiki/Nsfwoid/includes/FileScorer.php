<?php

namespace MediaWiki\Extension\Nsfwoid;

use File;
use Psr\Log\LoggerInterface;

/**
 * Scores one file and stores its score: the one path shared by the job, the maintenance
 * script and AbuseFilter's on-demand scoring.
 */
class FileScorer {

	private NsfwoidClient $client;
	private ScoreStore $store;
	private LoggerInterface $logger;

	public function __construct( NsfwoidClient $client, ScoreStore $store, LoggerInterface $logger ) {
		$this->client = $client;
		$this->store = $store;
		$this->logger = $logger;
	}

	/**
	 * Local files are sent as bytes: the service need not reach the wiki, and a fresh upload
	 * is scored before it appears on the file servers. Files of a foreign repository, such as
	 * Commons, are sent by URL.
	 *
	 * @throws ScoringException
	 */
	public function scoreFile( File $file, float $timeout ): ServiceScore {
		if ( $file->isLocal() ) {
			$path = $file->getLocalRefPath();
			$bytes = $path === false ? false : file_get_contents( $path );
			if ( $bytes === false ) {
				throw new ScoringException( 'The file could not be read', false );
			}
			$score = $this->client->scoreBytes( $bytes, $timeout );
		} else {
			$score = $this->client->scoreUrl( $file->getFullUrl(), $timeout );
		}
		return $this->storeIfSame( $score, $file->getSha1(), $file->getName() );
	}

	/**
	 * Scores the bytes of a file that has no page yet, such as an upload being verified.
	 *
	 * @throws ScoringException
	 */
	public function scoreBytes( string $bytes, string $sha1, float $timeout ): ServiceScore {
		return $this->storeIfSame( $this->client->scoreBytes( $bytes, $timeout ), $sha1, $sha1 );
	}

	/**
	 * Stores the score under the SHA-1 the service reports, after checking that it is the
	 * file's: a score of other bytes would be wrong under this key.
	 */
	private function storeIfSame( ServiceScore $score, string $expectedSha1, string $name ): ServiceScore {
		if ( $score->sha1 !== $expectedSha1 ) {
			$this->logger->warning(
				'nsfwoid scored other bytes than {name}: SHA-1 {got}, expected {expected}; nothing stored',
				[ 'name' => $name, 'got' => $score->sha1, 'expected' => $expectedSha1 ]
			);
			throw new ScoringException( "The service scored other bytes than $name", false );
		}
		$this->store->save( $score );
		return $score;
	}
}
