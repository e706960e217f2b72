<?php

namespace MediaWiki\Extension\Nsfwoid;

/**
 * Precision and recall of one model's scores at every threshold on a grid of 0.001, from
 * reviewers' verdicts, in the manner of ORES's threshold statistics. A file is flagged at a
 * threshold t when its score is at least t. At t:
 *
 *  - precision: of the judged files flagged, the share judged explicit;
 *  - recall: of the files judged explicit, the share flagged;
 *
 * each with the number of verdicts behind it and a 95 % Wilson score interval.
 *
 * The verdicts are a sample of what reviewers looked at, not of all uploads: the review queue
 * shows files above its own threshold, so low scores are judged rarely. Precision at a threshold
 * above the queue's is close to what a filter would see; recall counts only the explicit files
 * that reviewers found, and is an upper bound of the share of all explicit uploads a filter
 * would catch.
 *
 * Plain data, so that it can be cached: counts by grid step, computed exactly from the scores.
 */
class ThresholdCurve {

	/** Steps of the grid: thresholds 0, 0.001, …, 1 */
	public const STEPS = 1000;

	/** z for a 95 % interval */
	private const Z = 1.959964;

	/** @var int[] by step k: verdicts with a score of at least k / STEPS */
	private array $flagged;
	/** @var int[] by step k: of those, the verdicts "explicit" */
	private array $explicit;

	/**
	 * @param int[] $flagged
	 * @param int[] $explicit
	 */
	private function __construct( array $flagged, array $explicit ) {
		$this->flagged = $flagged;
		$this->explicit = $explicit;
	}

	/**
	 * @param iterable $verdicts each [ float $score, bool $explicit ]
	 */
	public static function fromVerdicts( iterable $verdicts ): self {
		$flagged = array_fill( 0, self::STEPS + 2, 0 );
		$explicit = $flagged;
		foreach ( $verdicts as [ $score, $isExplicit ] ) {
			$step = self::highestStepAtOrBelow( $score );
			$flagged[$step]++;
			if ( $isExplicit ) {
				$explicit[$step]++;
			}
		}
		// From counts by step to counts at or above each step
		for ( $k = self::STEPS - 1; $k >= 0; $k-- ) {
			$flagged[$k] += $flagged[$k + 1];
			$explicit[$k] += $explicit[$k + 1];
		}
		return new self( array_slice( $flagged, 0, self::STEPS + 1 ), array_slice( $explicit, 0, self::STEPS + 1 ) );
	}

	public static function fromArray( array $data ): self {
		return new self( $data['flagged'], $data['explicit'] );
	}

	public function toArray(): array {
		return [ 'flagged' => $this->flagged, 'explicit' => $this->explicit ];
	}

	public function total(): int {
		return $this->flagged[0];
	}

	public function totalExplicit(): int {
		return $this->explicit[0];
	}

	/**
	 * The statistics at a step of the grid.
	 *
	 * @param int $step 0 to STEPS
	 * @return array threshold; flagged and explicit (counts); precision and recall, each
	 *   [ value, low, high, n ], or null where n is 0
	 */
	public function at( int $step ): array {
		$flagged = $this->flagged[$step];
		$explicit = $this->explicit[$step];
		return [
			'threshold' => $step / self::STEPS,
			'flagged' => $flagged,
			'explicit' => $explicit,
			'precision' => self::proportion( $explicit, $flagged ),
			'recall' => self::proportion( $explicit, $this->totalExplicit() ),
		];
	}

	/**
	 * The curve where it changes, for a plot: each step whose count of flagged verdicts differs
	 * from the next step's, in threshold order, as [ threshold, precision, recall ].
	 *
	 * @return float[][]
	 */
	public function points(): array {
		$points = [];
		for ( $k = 0; $k <= self::STEPS; $k++ ) {
			if ( $this->flagged[$k] > 0 && ( $k === self::STEPS || $this->flagged[$k] !== $this->flagged[$k + 1] ) ) {
				$at = $this->at( $k );
				$points[] = [ $at['threshold'], $at['precision']['value'], $at['recall']['value'] ?? 0.0 ];
			}
		}
		return $points;
	}

	/**
	 * The lowest threshold whose precision is at least $minimum, which gives the highest recall
	 * at that precision; null when none has.
	 */
	public function maximumRecallStep( float $minimum ): ?int {
		for ( $k = 0; $k <= self::STEPS; $k++ ) {
			if ( $this->flagged[$k] > 0 && $this->explicit[$k] / $this->flagged[$k] >= $minimum ) {
				return $k;
			}
		}
		return null;
	}

	/**
	 * The highest threshold whose recall is at least $minimum, which gives the highest precision
	 * at that recall; null when none has.
	 */
	public function maximumPrecisionStep( float $minimum ): ?int {
		$explicit = $this->totalExplicit();
		for ( $k = self::STEPS; $k >= 0; $k-- ) {
			if ( $explicit > 0 && $this->explicit[$k] / $explicit >= $minimum ) {
				return $k;
			}
		}
		return null;
	}

	/**
	 * The step of a threshold on the grid, such as 0.8; null for a number off the grid or
	 * outside [0, 1].
	 */
	public static function stepOf( string $threshold ): ?int {
		if ( !preg_match( '/^(0(\.\d{1,3})?|1(\.0{1,3})?)$/', $threshold ) ) {
			return null;
		}
		return (int)round( (float)$threshold * self::STEPS );
	}

	/**
	 * The highest step k with k / STEPS <= $score, computed so that it agrees with PHP's and the
	 * filters' comparison of the two floats.
	 */
	private static function highestStepAtOrBelow( float $score ): int {
		$k = (int)floor( $score * self::STEPS );
		if ( $k + 1 <= self::STEPS && ( $k + 1 ) / self::STEPS <= $score ) {
			$k++;
		} elseif ( $k > 0 && $k / self::STEPS > $score ) {
			$k--;
		}
		return max( 0, min( self::STEPS, $k ) );
	}

	/**
	 * @return array|null [ 'value' => float, 'low' => float, 'high' => float, 'n' => int ], the low
	 *   and high bounds of the 95 % Wilson score interval
	 */
	private static function proportion( int $successes, int $n ): ?array {
		if ( $n === 0 ) {
			return null;
		}
		$p = $successes / $n;
		$z2 = self::Z ** 2;
		$centre = ( $p + $z2 / ( 2 * $n ) ) / ( 1 + $z2 / $n );
		$half = self::Z / ( 1 + $z2 / $n ) * sqrt( $p * ( 1 - $p ) / $n + $z2 / ( 4 * $n * $n ) );
		return [ 'value' => $p, 'low' => max( 0.0, $centre - $half ), 'high' => min( 1.0, $centre + $half ), 'n' => $n ];
	}
}
