<?php

namespace MediaWiki\Extension\Nsfwoid\Job;

use Job;
use JobSpecification;
use MediaWiki\Extension\Nsfwoid\ScoringException;
use MediaWiki\Logger\LoggerFactory;
use MediaWiki\MediaWikiServices;
use Title;

/**
 * nsfwoidScore: scores the current version of a local file and stores the score. A service
 * that is down or failing fails the job, so that the queue retries it; a refused image is
 * logged and not retried.
 */
class ScoreFileJob extends Job {

	public const TYPE = 'nsfwoidScore';

	public function __construct( Title $title, array $params ) {
		parent::__construct( self::TYPE, $title, $params );
		$this->removeDuplicates = true;
	}

	public static function newSpec( Title $title ): JobSpecification {
		return new JobSpecification( self::TYPE, [], [ 'removeDuplicates' => true ], $title );
	}

	public function run() {
		// Jobs are built by the job queue, which cannot inject services in MediaWiki 1.39.
		$services = MediaWikiServices::getInstance();
		$logger = LoggerFactory::getInstance( 'Nsfwoid' );
		// From the primary database: a replica may not have the upload yet.
		$file = $services->getRepoGroup()->getLocalRepo()->findFile(
			$this->getTitle(), [ 'latest' => true, 'ignoreRedirect' => true ]
		);
		if ( !$file ) {
			$logger->info( 'nsfwoidScore: {title} is no longer a file', [ 'title' => $this->getTitle()->getPrefixedText() ] );
			return true;
		}
		try {
			$services->get( 'Nsfwoid.FileScorer' )->scoreFile(
				$file, (float)$services->getMainConfig()->get( 'NsfwoidTimeout' )
			);
		} catch ( ScoringException $e ) {
			if ( $e->isRetryable() ) {
				$this->setLastError( $e->getMessage() );
				return false;
			}
			$logger->warning( 'nsfwoidScore: {name} was not scored: {error}',
				[ 'name' => $file->getName(), 'error' => $e->getMessage() ] );
		}
		return true;
	}
}
