<?php

namespace MediaWiki\Extension\Nsfwoid\Job;

use Config;
use File;
use Job;
use JobSpecification;
use MediaWiki\Extension\Nsfwoid\FileScorer;
use MediaWiki\Extension\Nsfwoid\Metrics;
use MediaWiki\Extension\Nsfwoid\NsfwoidClient;
use MediaWiki\Extension\Nsfwoid\ScoreStore;
use MediaWiki\Extension\Nsfwoid\ScoringException;
use MediaWiki\JobQueue\JobFactory;
use MediaWiki\Logger\LoggerFactory;
use MediaWiki\MediaWikiServices;
use RepoGroup;
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

	private Config $config;
	private RepoGroup $repoGroup;
	private ScoreStore $scoreStore;
	private NsfwoidClient $client;
	private FileScorer $fileScorer;
	private Metrics $metrics;

	/**
	 * Built by the job queue, with the services that extension.json's JobClasses names (MediaWiki 1.40 and
	 * later), or by newWithServices() (1.39, whose job queue only calls a class's constructor or a callable).
	 */
	public function __construct(
		Title $title,
		array $params,
		Config $config,
		RepoGroup $repoGroup,
		ScoreStore $scoreStore,
		NsfwoidClient $client,
		FileScorer $fileScorer,
		Metrics $metrics
	) {
		parent::__construct( self::TYPE, $title, $params );
		$this->removeDuplicates = true;
		$this->config = $config;
		$this->repoGroup = $repoGroup;
		$this->scoreStore = $scoreStore;
		$this->client = $client;
		$this->fileScorer = $fileScorer;
		$this->metrics = $metrics;
	}

	/**
	 * MediaWiki 1.39's job queue takes a class name or a callable, not services: the registration callback
	 * (onRegistration) makes this the callable there.
	 */
	public static function newWithServices( Title $title, array $params ): self {
		$services = MediaWikiServices::getInstance();
		return new self( $title, $params, $services->getMainConfig(), $services->getRepoGroup(),
			$services->get( 'Nsfwoid.ScoreStore' ), $services->get( 'Nsfwoid.Client' ),
			$services->get( 'Nsfwoid.FileScorer' ), $services->get( 'Nsfwoid.Metrics' ) );
	}

	/**
	 * extension.json's callback: where the job queue cannot build a job from a specification with services
	 * (before MediaWiki 1.40's JobFactory), it gets newWithServices instead.
	 */
	public static function onRegistration(): void {
		if ( !class_exists( JobFactory::class ) ) {
			$GLOBALS['wgJobClasses'][self::TYPE] = [ self::class, 'newWithServices' ];
		}
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
		$logger = LoggerFactory::getInstance( 'Nsfwoid' );
		$timeout = (float)$this->config->get( 'NsfwoidTimeout' );
		$file = $this->file();
		if ( !$file ) {
			$logger->info( 'nsfwoidScore: {title} is no longer a file, or no longer has that version',
				[ 'title' => $this->getTitle()->getPrefixedText() ] );
			return true;
		}
		try {
			if ( isset( $this->params['sha1'] ) && $this->scoreStore->getScores(
				[ $file->getSha1() ], $this->client->currentModel( $timeout )
			) ) {
				return true;  // scored already, as this content was in another version or another file
			}
			$this->fileScorer->scoreFile( $file, $timeout );
		} catch ( ScoringException $e ) {
			if ( $e->isRetryable() ) {
				$this->metrics->increment( 'job_retries_total' );
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
	 * @return File|null
	 */
	private function file(): ?File {
		$repo = $this->repoGroup->getLocalRepo();
		$current = $repo->findFile( $this->getTitle(), [ 'latest' => true, 'ignoreRedirect' => true ] );
		if ( !isset( $this->params['sha1'] ) || ( $current && $current->getSha1() === $this->params['sha1'] ) ) {
			return $current ?: null;
		}
		// An older version: one whose content changed again before this job ran.
		$old = $repo->findFileFromKey( $this->params['sha1'], [ 'time' => $this->params['timestamp'] ] );
		return $old ?: null;
	}
}
