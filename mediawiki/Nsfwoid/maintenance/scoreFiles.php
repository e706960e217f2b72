<?php
/**
 * Scores every local file that has no score of the service's current model.
 *
 * Usage: php maintenance/scoreFiles.php [--batch-size N] [--sleep S] [--limit N] [--use-jobqueue]
 * Set MW_INSTALL_PATH when the extension is not in MediaWiki's extensions/ directory.
 */

use MediaWiki\Extension\Nsfwoid\Job\ScoreFileJob;
use MediaWiki\Extension\Nsfwoid\ScoringException;
use MediaWiki\MediaWikiServices;

$IP = getenv( 'MW_INSTALL_PATH' ) ?: __DIR__ . '/../../..';
require_once "$IP/maintenance/Maintenance.php";

class ScoreFiles extends Maintenance {

	public function __construct() {
		parent::__construct();
		$this->requireExtension( 'Nsfwoid' );
		$this->addDescription( 'Score every file in the image table that has no score of the current model.' );
		$this->addOption( 'sleep', 'Seconds to sleep between batches', false, true );
		$this->addOption( 'limit', 'Score at most this many files', false, true );
		$this->addOption( 'use-jobqueue', 'Push nsfwoidScore jobs instead of scoring here' );
		$this->setBatchSize( 100 );
	}

	public function execute() {
		$services = MediaWikiServices::getInstance();
		$store = $services->get( 'Nsfwoid.ScoreStore' );
		$timeout = (float)$this->getConfig()->get( 'NsfwoidTimeout' );
		try {
			$model = $services->get( 'Nsfwoid.Client' )->currentModel( $timeout );
		} catch ( ScoringException $e ) {
			$this->fatalError( 'Cannot reach the nsfwoid service: ' . $e->getMessage() );
		}
		$limit = (int)$this->getOption( 'limit', PHP_INT_MAX );
		$useJobQueue = $this->hasOption( 'use-jobqueue' );
		$total = min( $limit, $store->countUnscoredFiles( $model ) );
		$this->output( "$total files to score with model " . substr( $model, 0, 12 ) . "\n" );

		$localRepo = $services->getRepoGroup()->getLocalRepo();
		$jobQueueGroup = $services->getJobQueueGroup();
		$fileScorer = $services->get( 'Nsfwoid.FileScorer' );
		$done = $refused = 0;
		$after = '';
		while ( $done + $refused < $limit ) {
			$names = $store->getUnscoredFileNames( $model, $after, min( $this->getBatchSize(), $limit - $done - $refused ) );
			if ( !$names ) {
				break;
			}
			foreach ( $names as $name ) {
				$after = $name;
				$file = $localRepo->newFile( $name );
				if ( $useJobQueue ) {
					$jobQueueGroup->push( ScoreFileJob::newSpec( $file->getTitle() ) );
					$done++;
					continue;
				}
				try {
					$fileScorer->scoreFile( $file, $timeout );
					$done++;
				} catch ( ScoringException $e ) {
					if ( $e->isRetryable() ) {
						$this->fatalError( "Stopped at $name: " . $e->getMessage() . '. A rerun resumes here.' );
					}
					$refused++;
					$this->output( "$name not scored: " . $e->getMessage() . "\n" );
				}
			}
			$this->output( ( $useJobQueue ? 'Queued' : 'Scored' ) . " $done of $total; $refused refused\n" );
			if ( $this->hasOption( 'sleep' ) ) {
				usleep( (int)( 1e6 * (float)$this->getOption( 'sleep' ) ) );
			}
		}
		$this->output( 'Done: ' . ( $useJobQueue ? 'queued' : 'scored' ) . " $done, refused $refused.\n" );
	}
}

$maintClass = ScoreFiles::class;
require_once RUN_MAINTENANCE_IF_MAIN;
