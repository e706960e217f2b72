<?php
/**
 * Scores every local file that has no score of the service's current model. Files that can be
 * scored neither as they are nor by a thumbnail, such as audio, are counted as skipped.
 *
 * Usage: php maintenance/scoreFiles.php [--batch-size N] [--sleep S] [--limit N] [--start NAME]
 *   [--use-jobqueue [--max-jobs N]]
 * Set MW_INSTALL_PATH when the extension is not in MediaWiki's extensions/ directory.
 */

use MediaWiki\Extension\Nsfwoid\Job\ScoreFileJob;
use MediaWiki\Extension\Nsfwoid\ScoringException;
use MediaWiki\MediaWikiServices;

$IP = getenv( 'MW_INSTALL_PATH' ) ?: dirname( __DIR__, 3 );
if ( !is_file( "$IP/maintenance/Maintenance.php" ) ) {
	fwrite( STDERR, "scoreFiles.php: no MediaWiki in $IP. Set MW_INSTALL_PATH to MediaWiki's directory, "
		. "such as MW_INSTALL_PATH=/usr/share/mediawiki on Debian.\n" );
	exit( 1 );
}
require_once "$IP/maintenance/Maintenance.php";

class ScoreFiles extends Maintenance {

	private const QUEUE_CHECK_SECONDS = 2;

	public function __construct() {
		parent::__construct();
		$this->requireExtension( 'Nsfwoid' );
		$this->addDescription( 'Score every file in the image table that has no score of the current model.' );
		$this->addOption( 'sleep', 'Seconds to sleep between batches', false, true );
		$this->addOption( 'limit', 'Score at most this many files', false, true );
		$this->addOption( 'start', 'Begin after this file name (img_name), as a stopped run prints it', false, true );
		$this->addOption( 'use-jobqueue', 'Push nsfwoidScore jobs instead of scoring here' );
		$this->addOption( 'max-jobs', 'With --use-jobqueue, pause while more than this many nsfwoidScore jobs '
			. 'wait in the queue (default 1000; 0 never pauses). A queue that cannot count its jobs, such as '
			. "EventBus's, never pauses: pace it with --sleep", false, true );
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
		$verb = $useJobQueue ? 'queued' : 'scored';
		$this->output( 'Scoring files without a score of model ' . substr( $model, 0, 12 ) . "\n" );

		$localRepo = $services->getRepoGroup()->getLocalRepo();
		$jobQueueGroup = $services->getJobQueueGroup();
		$fileScorer = $services->get( 'Nsfwoid.FileScorer' );
		$maxJobs = (int)$this->getOption( 'max-jobs', 1000 );
		$checked = $done = $refused = $skipped = 0;
		$after = (string)$this->getOption( 'start', '' );
		while ( $done + $refused < $limit ) {
			$batch = $store->getFileBatch( $model, $after, $this->getBatchSize() );
			if ( !$batch ) {
				break;
			}
			// One query for the batch's unscored files, not one each.
			$unscored = $localRepo->findFiles( array_column(
				array_filter( $batch, static fn ( array $entry ) => !$entry['scored'] ), 'name'
			) );
			$jobs = [];
			foreach ( $batch as [ 'name' => $name, 'scored' => $scored ] ) {
				if ( $done + $refused >= $limit ) {
					break;
				}
				if ( !$scored ) {
					$file = $unscored[$name] ?? null;
					if ( !$file || !$fileScorer->canScore( $file ) ) {
						$skipped++;
					} elseif ( $useJobQueue ) {
						$jobs[] = ScoreFileJob::newSpec( $file->getTitle() );
						$done++;
					} else {
						try {
							$fileScorer->scoreFile( $file, $timeout );
							$done++;
						} catch ( ScoringException $e ) {
							if ( $e->isRetryable() ) {
								$resume = $after === '' ? '' : ' --start ' . escapeshellarg( $after );
								$this->fatalError( "Stopped at $name: " . $e->getMessage()
									. ". Rerun with$resume to resume there." );
							}
							$refused++;
							$this->output( "$name not scored: " . $e->getMessage() . "\n" );
						}
					}
				}
				$checked++;
				$after = $name;
			}
			if ( $jobs ) {
				$this->waitWhileQueued( $jobQueueGroup->get( ScoreFileJob::TYPE ), $maxJobs );
				$jobQueueGroup->push( $jobs );
			}
			$this->output( "Checked $checked files, up to $after: $verb $done, refused $refused, skipped $skipped\n" );
			$this->waitForReplication();
			if ( $this->hasOption( 'sleep' ) ) {
				usleep( (int)( 1e6 * (float)$this->getOption( 'sleep' ) ) );
			}
		}
		$this->output( "Done: $verb $done, refused $refused, skipped $skipped.\n" );
	}

	/**
	 * A backfill of Commons would push jobs for millions of files much faster than runners take them.
	 */
	private function waitWhileQueued( JobQueue $queue, int $maxJobs ): void {
		while ( $maxJobs > 0 && ( $queued = $queue->getSize() ) > $maxJobs ) {
			$this->output( "Waiting while $queued nsfwoidScore jobs are queued, more than --max-jobs $maxJobs\n" );
			sleep( self::QUEUE_CHECK_SECONDS );
		}
	}
}

$maintClass = ScoreFiles::class;
require_once RUN_MAINTENANCE_IF_MAIN;
