<?php

namespace MediaWiki\Extension\Nsfwoid\Job;

use File;
use Job;
use JobSpecification;
use MediaWiki\Extension\Nsfwoid\ScoringException;
use MediaWiki\Logger\LoggerFactory;
use MediaWiki\MediaWikiServices;
use Title;

/**
 * nsfwoidScore: scores one version of a local file, named by its SHA-1 and timestamp, and stores
 * the score; without them (jobs queued by scoreFiles.php), the current version. Content that
 * already has a score of the service's current model is not sent again. A service that is down
 * or failing fails the job, so that the queue retries it; a refused image is logged and not
 * retried.
 */
class ScoreFileJob extends Job {

	public const TYPE = 'nsfwoidScore';

	public function __construct( Title $title, array $params ) {
		parent::__construct( self::TYPE, $title, $params );
		$this->removeDuplicates = true;
	}

	/**
	 * @param Title $title
	 * @param string|null $sha1 base 36: the version to score; null: the current one
	 * @param string|null $timestamp the version's, TS_MW
	 */
	public static function newSpec( Title $title, ?string $sha1 = null, ?string $timestamp = null ): JobSpecification {
		$params = $sha1 === null ? [] : [ 'sha1' => $sha1, 'timestamp' => $timestamp ];
		return new JobSpecification( self::TYPE, $params, [ 'removeDuplicates' => true ], $title );
	}

	public function run() {
		// Jobs are built by the job queue, which cannot inject services in MediaWiki 1.39.
		$services = MediaWikiServices::getInstance();
		$logger = LoggerFactory::getInstance( 'Nsfwoid' );
		$timeout = (float)$services->getMainConfig()->get( 'NsfwoidTimeout' );
		$file = $this->file( $services );
		if ( !$file ) {
			$logger->info( 'nsfwoidScore: {title} is no longer a file, or no longer has that version',
				[ 'title' => $this->getTitle()->getPrefixedText() ] );
			return true;
		}
		try {
			if ( isset( $this->params['sha1'] ) && $services->get( 'Nsfwoid.ScoreStore' )->getScores(
				[ $file->getSha1() ], $services->get( 'Nsfwoid.Client' )->currentModel( $timeout )
			) ) {
				return true;  // scored already, as this content was in another version or another file
			}
			$services->get( 'Nsfwoid.FileScorer' )->scoreFile( $file, $timeout );
		} catch ( ScoringException $e ) {
			if ( $e->isRetryable() ) {
				$services->get( 'Nsfwoid.Metrics' )->increment( 'job_retries_total' );
				$this->setLastError( $e->getMessage() );
				return false;
			}
			$logger->warning( 'nsfwoidScore: {name} was not scored: {error}',
				[ 'name' => $file->getName(), 'error' => $e->getMessage() ] );
		}
		return true;
	}

	/**
	 * The version to score, from the primary database: a replica may not have the upload yet.
	 *
	 * @param MediaWikiServices $services
	 * @return File|null
	 */
	private function file( MediaWikiServices $services ): ?File {
		$repo = $services->getRepoGroup()->getLocalRepo();
		$current = $repo->findFile( $this->getTitle(), [ 'latest' => true, 'ignoreRedirect' => true ] );
		if ( !isset( $this->params['sha1'] ) || ( $current && $current->getSha1() === $this->params['sha1'] ) ) {
			return $current ?: null;
		}
		// An older version: one whose content changed again before this job ran.
		$old = $repo->findFileFromKey( $this->params['sha1'], [ 'time' => $this->params['timestamp'] ] );
		return $old ?: null;
	}
}
