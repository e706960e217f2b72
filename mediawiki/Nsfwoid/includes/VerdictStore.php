<?php

namespace MediaWiki\Extension\Nsfwoid;

use ApiMessage;
use ManualLogEntry;
use MediaWiki\Config\ServiceOptions;
use MediaWiki\Permissions\Authority;
use MediaWiki\User\ActorNormalization;
use StatusValue;
use Title;
use WANObjectCache;
use Wikimedia\Rdbms\ILoadBalancer;

/**
 * Reviewers' verdicts (table nsfwoid_verdict), one per file content, and the precision and recall
 * they give a model's scores (ThresholdCurve). A verdict records the stored score and its model
 * at the time, the reviewer and the time; a later verdict on the same content replaces it. Each
 * verdict is logged (Special:Log/nsfwoid, readable with `nsfwoid-review`) and marks the version
 * reviewed.
 *
 * The curve of a model is cached in the main WAN cache and recomputed after a new verdict (a
 * check key that the write touches); the scores of recent uploads, for the share that a
 * threshold flags, for an hour.
 */
class VerdictStore {

	public const CONSTRUCTOR_OPTIONS = [ 'NsfwoidMinVerdicts' ];

	public const EXPLICIT = 'explicit';
	public const NOT_EXPLICIT = 'notexplicit';
	public const VERDICTS = [ self::EXPLICIT, self::NOT_EXPLICIT ];

	/** How many of the latest uploads give the share that a threshold flags */
	public const RECENT_UPLOADS = 10000;

	private int $minVerdicts;
	private ILoadBalancer $loadBalancer;
	private ActorNormalization $actorNormalization;
	private ScoreStore $scoreStore;
	private ReviewQueue $reviewQueue;
	private WANObjectCache $cache;

	public function __construct(
		ServiceOptions $options, ILoadBalancer $loadBalancer, ActorNormalization $actorNormalization,
		ScoreStore $scoreStore, ReviewQueue $reviewQueue, WANObjectCache $cache
	) {
		$options->assertRequiredOptions( self::CONSTRUCTOR_OPTIONS );
		$this->minVerdicts = (int)$options->get( 'NsfwoidMinVerdicts' );
		$this->loadBalancer = $loadBalancer;
		$this->actorNormalization = $actorNormalization;
		$this->scoreStore = $scoreStore;
		$this->reviewQueue = $reviewQueue;
		$this->cache = $cache;
	}

	/**
	 * Records a verdict on the current version of a local file, which must have a stored score,
	 * and marks the version reviewed. The caller checks the right `nsfwoid-review`.
	 *
	 * @param Title|null $title
	 * @param string|null $sha1 as for ReviewQueue::findCurrentVersion()
	 * @param string $verdict one of self::VERDICTS
	 * @param Authority $performer
	 * @return StatusValue good, with [ 'sha1', 'score', 'previous' ] as its value; errors as
	 *   ReviewQueue::markReviewed()'s, or `noscore`
	 */
	public function record( ?Title $title, ?string $sha1, string $verdict, Authority $performer ): StatusValue {
		$found = $this->reviewQueue->findCurrentVersion( $title, $sha1 );
		if ( !$found->isGood() ) {
			return $found;
		}
		$file = $found->getValue();
		$stored = $this->scoreStore->getStoredScore( $file->getSha1() );
		if ( $stored === null ) {
			return StatusValue::newFatal( ApiMessage::create(
				[ 'apierror-nsfwoid-noscore', wfEscapeWikiText( $file->getTitle()->getPrefixedText() ) ], 'noscore'
			) );
		}
		$reviewed = $this->reviewQueue->markFileReviewed( $file, $performer );
		if ( !$reviewed->isGood() ) {
			return $reviewed;
		}
		$dbw = $this->loadBalancer->getConnection( DB_PRIMARY );
		$previous = $dbw->selectField( 'nsfwoid_verdict', 'nsv_explicit', [ 'nsv_sha1' => $file->getSha1() ],
			__METHOD__ );
		$values = [
			'nsv_explicit' => $verdict === self::EXPLICIT ? 1 : 0,
			'nsv_score' => $stored['score'],
			'nsv_model' => $stored['model'],
			'nsv_actor' => $this->actorNormalization->acquireActorId( $performer->getUser(), $dbw ),
			'nsv_timestamp' => $dbw->timestamp(),
		];
		$dbw->upsert( 'nsfwoid_verdict', [ 'nsv_sha1' => $file->getSha1() ] + $values, 'nsv_sha1', $values,
			__METHOD__ );
		$previousVerdict = $previous === false ? null : ( $previous ? self::EXPLICIT : self::NOT_EXPLICIT );

		$entry = new ManualLogEntry( 'nsfwoid', 'verdict' );
		$entry->setPerformer( $performer->getUser() );
		$entry->setTarget( $file->getTitle() );
		$entry->setParameters( [
			'4::verdict' => $verdict,
			'5::score' => sprintf( '%.3f', $stored['score'] ),
			'6::sha1' => $file->getSha1(),
			'previous' => $previousVerdict,
		] );
		$entry->insert( $dbw );

		$this->cache->touchCheckKey( $this->curveCheckKey( $stored['model'] ) );
		return StatusValue::newGood(
			[ 'sha1' => $file->getSha1(), 'score' => $stored['score'], 'previous' => $previousVerdict ]
		);
	}

	/**
	 * @param string[] $sha1s base 36
	 * @return string[] the verdict by SHA-1, for those that have one
	 */
	public function getVerdicts( array $sha1s ): array {
		if ( !$sha1s ) {
			return [];
		}
		$rows = $this->loadBalancer->getConnection( DB_REPLICA )->select(
			'nsfwoid_verdict', [ 'nsv_sha1', 'nsv_explicit' ], [ 'nsv_sha1' => array_values( $sha1s ) ], __METHOD__
		);
		$verdicts = [];
		foreach ( $rows as $row ) {
			$verdicts[$row->nsv_sha1] = $row->nsv_explicit ? self::EXPLICIT : self::NOT_EXPLICIT;
		}
		return $verdicts;
	}

	/**
	 * The precision and recall of a model's scores, from the verdicts on its scores.
	 *
	 * @param int $model nsfwoid_model.nsm_id
	 */
	public function getCurve( int $model ): ThresholdCurve {
		$data = $this->cache->getWithSetCallback(
			$this->cache->makeKey( 'nsfwoid-curve', $model ),
			WANObjectCache::TTL_DAY,
			function () use ( $model ) {
				$rows = $this->loadBalancer->getConnection( DB_REPLICA )->select(
					'nsfwoid_verdict', [ 'nsv_score', 'nsv_explicit' ], [ 'nsv_model' => $model ], __METHOD__
				);
				$verdicts = [];
				foreach ( $rows as $row ) {
					$verdicts[] = [ (float)$row->nsv_score, (bool)$row->nsv_explicit ];
				}
				return ThresholdCurve::fromVerdicts( $verdicts )->toArray();
			},
			[ 'checkKeys' => [ $this->curveCheckKey( $model ) ], 'lockTSE' => 30 ]
		);
		return ThresholdCurve::fromArray( $data );
	}

	/**
	 * The scores of the latest RECENT_UPLOADS uploads with a score of the model, as a curve
	 * whose "flagged" counts the uploads at or above each threshold.
	 *
	 * @param int $model nsfwoid_model.nsm_id
	 */
	public function getRecentUploads( int $model ): ThresholdCurve {
		$data = $this->cache->getWithSetCallback(
			$this->cache->makeKey( 'nsfwoid-recent-uploads', $model ),
			WANObjectCache::TTL_HOUR,
			fn () => ThresholdCurve::fromVerdicts( array_map(
				static fn ( float $score ) => [ $score, false ],
				$this->scoreStore->getRecentUploadScores( $model, self::RECENT_UPLOADS )
			) )->toArray()
		);
		return ThresholdCurve::fromArray( $data );
	}

	/**
	 * The figures at a threshold, with the share of recent uploads it flags.
	 *
	 * @param ThresholdCurve $curve from getCurve()
	 * @param ThresholdCurve $uploads from getRecentUploads()
	 * @param int $step
	 * @return array ThresholdCurve::at()'s, and uploads: [ share (null without uploads), of ]
	 */
	public function describe( ThresholdCurve $curve, ThresholdCurve $uploads, int $step ): array {
		$share = $uploads->total() ? $uploads->at( $step )['flagged'] / $uploads->total() : null;
		return $curve->at( $step ) + [ 'uploads' => [ 'share' => $share, 'of' => $uploads->total() ] ];
	}

	/**
	 * The suggested thresholds: for each minimum precision (`minprecision`), the lowest threshold
	 * that reaches it; for each minimum recall (`minrecall`), the highest. Threshold null where
	 * none does.
	 *
	 * @param ThresholdCurve $curve
	 * @param ThresholdCurve $uploads
	 * @param string $kind minprecision or minrecall
	 * @param float[] $minimums
	 * @return array[] each [ $kind => minimum ] + describe()'s
	 */
	public function suggest( ThresholdCurve $curve, ThresholdCurve $uploads, string $kind, array $minimums ): array {
		return array_map( function ( float $minimum ) use ( $curve, $uploads, $kind ) {
			$step = $kind === 'minprecision'
				? $curve->maximumRecallStep( $minimum )
				: $curve->maximumPrecisionStep( $minimum );
			return [ $kind => $minimum ]
				+ ( $step === null ? [ 'threshold' => null ] : $this->describe( $curve, $uploads, $step ) );
		}, $minimums );
	}

	/**
	 * Whether a curve rests on enough verdicts to be given: at least $wgNsfwoidMinVerdicts, and at
	 * least one of each kind.
	 */
	public function isEnough( ThresholdCurve $curve ): bool {
		return $curve->total() >= $this->minVerdicts && $curve->totalExplicit() > 0
			&& $curve->totalExplicit() < $curve->total();
	}

	public function getMinVerdicts(): int {
		return $this->minVerdicts;
	}

	private function curveCheckKey( int $model ): string {
		return $this->cache->makeKey( 'nsfwoid-verdicts', $model );
	}
}
