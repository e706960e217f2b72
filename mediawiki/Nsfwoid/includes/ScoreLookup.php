<?php

namespace MediaWiki\Extension\Nsfwoid;

use File;
use MediaWiki\Config\ServiceOptions;
use Psr\Log\LoggerInterface;
use WANObjectCache;

/**
 * Scores for AbuseFilter, while an edit or an upload waits: stored scores first, then the
 * service, all within one time budget. It fails open: what cannot be scored in time is left
 * out, and the edit is checked without it.
 *
 * A service that times out, or answers in more than half of $wgNsfwoidEditTimeout, is not
 * called again for $wgNsfwoidEditBackoff seconds, by any edit that shares the object cache: a
 * hung or slow service then costs one edit its wait, not every edit that adds a file.
 */
class ScoreLookup {

	public const CONSTRUCTOR_OPTIONS = [ 'NsfwoidServiceUrl', 'NsfwoidEditBackoff', 'NsfwoidEditTimeout' ];

	private const MODEL_CACHE_SECONDS = 300;

	private string $serviceUrl;
	private int $backoff;
	/** @var float seconds: an answer slower than this starts the backoff, as a timeout does */
	private float $slowAnswer;
	private NsfwoidClient $client;
	private ScoreStore $store;
	private FileScorer $fileScorer;
	private ForeignScores $foreignScores;
	private WANObjectCache $cache;
	private Metrics $metrics;
	private LoggerInterface $logger;

	public function __construct(
		ServiceOptions $options,
		NsfwoidClient $client,
		ScoreStore $store,
		FileScorer $fileScorer,
		ForeignScores $foreignScores,
		WANObjectCache $cache,
		Metrics $metrics,
		LoggerInterface $logger
	) {
		$options->assertRequiredOptions( self::CONSTRUCTOR_OPTIONS );
		$this->serviceUrl = $options->get( 'NsfwoidServiceUrl' );
		$this->backoff = (int)$options->get( 'NsfwoidEditBackoff' );
		$this->slowAnswer = (float)$options->get( 'NsfwoidEditTimeout' ) / 2;
		$this->client = $client;
		$this->store = $store;
		$this->fileScorer = $fileScorer;
		$this->foreignScores = $foreignScores;
		$this->cache = $cache;
		$this->metrics = $metrics;
		$this->logger = $logger;
	}

	/**
	 * The highest score among these files, or null when none could be scored in $timeout
	 * seconds. Stored scores come first, then those a foreign repository's wiki stored for its
	 * files. The other files are scored and stored, if the service can read them as they are:
	 * no thumbnail is rendered while an edit waits.
	 *
	 * @param File[] $files
	 */
	public function highestScore( array $files, float $timeout ): ?float {
		$deadline = microtime( true ) + $timeout;
		$model = $this->currentModel( $timeout );
		$scores = $this->storedScores( array_map( static fn ( File $file ) => $file->getSha1(), $files ), $model );
		$foreign = array_filter(
			$files, static fn ( File $file ) => !$file->isLocal() && !isset( $scores[$file->getSha1()] )
		);
		if ( $model !== null && $foreign ) {
			$scores += $this->foreignScores->getScores( $foreign, $model, $deadline - microtime( true ) );
		}
		foreach ( $files as $file ) {
			if ( !isset( $scores[$file->getSha1()] ) && $this->fileScorer->canScore( $file, false ) ) {
				$scores[$file->getSha1()] = $this->failOpen(
					fn () => $this->fileScorer->scoreFile( $file, $deadline - microtime( true ), false ),
					$file->getName()
				);
			}
		}
		$scores = array_filter( $scores, 'is_float' );
		return $scores ? max( $scores ) : null;
	}

	/**
	 * The score of a file being uploaded, from its temporary file when it has no stored score.
	 *
	 * @param string $sha1 base 36
	 * @param array[] $uploads the temporary files being verified, as PendingUploads has them
	 * @param float $timeout seconds
	 */
	public function uploadScore( string $sha1, array $uploads, float $timeout ): ?float {
		$deadline = microtime( true ) + $timeout;
		$stored = $this->storedScores( [ $sha1 ], $this->currentModel( $timeout ) );
		if ( isset( $stored[$sha1] ) || !$uploads ) {
			return $stored[$sha1] ?? null;
		}
		return $this->failOpen(
			fn () => $this->fileScorer->scoreUpload( $sha1, $uploads, $deadline - microtime( true ) ), $sha1
		);
	}

	/**
	 * @param string[] $sha1s
	 * @param string|null $model the current model, if known
	 * @return float[] the stored scores of $model, by SHA-1
	 */
	private function storedScores( array $sha1s, ?string $model ): array {
		return $model === null ? [] : $this->store->getScores( $sha1s, $model );
	}

	/**
	 * The model whose scores count: the service's, cached for a few minutes; when the service
	 * cannot be reached, the model of the newest stored score; null when there is none.
	 *
	 * @param float $timeout seconds
	 */
	private function currentModel( float $timeout ): ?string {
		return $this->cache->getWithSetCallback(
			$this->cache->makeKey( 'nsfwoid-model' ),
			self::MODEL_CACHE_SECONDS,
			function ( $old, &$ttl ) use ( $timeout ) {
				try {
					return $this->callService( fn () => $this->client->currentModel( $timeout ) );
				} catch ( ScoringException $e ) {
					$ttl = WANObjectCache::TTL_UNCACHEABLE;
					return false;
				}
			}
		) ?: $this->store->getNewestModel();
	}

	/**
	 * @param callable $score returns a ServiceScore or throws a ScoringException
	 * @param string $name what is scored, for the log
	 * @return float|null
	 */
	private function failOpen( callable $score, string $name ): ?float {
		try {
			$scored = $this->callService( $score )->score;
			$this->metrics->increment( 'edit_scores_total' );
			return $scored;
		} catch ( ScoringException $e ) {
			$this->logger->info( 'nsfwoid could not score {name}; the check goes on without it: {error}',
				[ 'name' => $name, 'error' => $e->getMessage() ] );
			return null;
		}
	}

	/**
	 * Calls the service unless it timed out, or answered slowly, less than $wgNsfwoidEditBackoff
	 * seconds ago, and starts that wait when this call times out or takes over half of
	 * $wgNsfwoidEditTimeout. The time the wait ends is stored, rather than left to the cache's
	 * expiry, which some caches round to whole seconds.
	 *
	 * @param callable $call calls the service, or throws a ScoringException
	 * @return mixed what $call returns
	 * @throws ScoringException
	 */
	private function callService( callable $call ) {
		$key = $this->cache->makeKey( 'nsfwoid-backoff', md5( $this->serviceUrl ) );
		if ( $this->cache->get( $key ) > microtime( true ) ) {
			throw new ScoringException( 'The service timed out recently; it is not called until '
				. '$wgNsfwoidEditBackoff has passed', true );
		}
		$started = microtime( true );
		try {
			$answer = $call();
		} catch ( ScoringException $e ) {
			if ( $e->isTimedOut() ) {
				$this->backOff( $key, 'nsfwoid timed out' );
			}
			throw $e;
		}
		$seconds = microtime( true ) - $started;
		if ( $seconds > $this->slowAnswer ) {
			$this->backOff( $key, sprintf( 'nsfwoid answered in %.1f s, over half of $wgNsfwoidEditTimeout', $seconds ) );
		}
		return $answer;
	}

	private function backOff( string $key, string $why ): void {
		if ( $this->backoff > 0 ) {
			$this->cache->set( $key, microtime( true ) + $this->backoff, $this->backoff );
			$this->metrics->increment( 'backoffs_total' );
			$this->logger->warning( '{why}; edits and uploads use stored scores only for {seconds} s',
				[ 'why' => $why, 'seconds' => $this->backoff ] );
		}
	}
}
