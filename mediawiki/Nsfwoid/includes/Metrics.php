<?php

namespace MediaWiki\Extension\Nsfwoid;

use IBufferingStatsdDataFactory;

/**
 * The extension's counters, for operators to see when scoring stops working. Through
 * StatsFactory where MediaWiki has it (1.41 and later: `mediawiki_Nsfwoid_<name>` with labels),
 * each copied to the statsd name `Nsfwoid.<name>.<label values>` that MediaWiki 1.39's statsd data
 * factory gets alone. Maintenance scripts and job runners send the statsd copies when they end.
 *
 *  - scores_stored_total: scores stored, by jobs, the backfill and edits
 *  - service_failures_total: calls to the service that failed, by `kind` (timeout, refused,
 *    4xx, 5xx: a refused connection, and any other failure to reach it, is `refused`)
 *  - backoffs_total: times edits and uploads began leaving the service alone
 *  - job_retries_total: nsfwoidScore jobs failed for the queue to retry
 *  - edit_scores_total: files scored on demand while an edit or an upload waited
 */
class Metrics {

	public const FAILURE_KINDS = [ 'timeout', 'refused', '4xx', '5xx' ];

	/** @var \Wikimedia\Stats\StatsFactory|null */
	private $statsFactory;
	private IBufferingStatsdDataFactory $statsd;

	/**
	 * @param \Wikimedia\Stats\StatsFactory|null $statsFactory null before MediaWiki 1.41
	 * @param IBufferingStatsdDataFactory $statsd
	 */
	public function __construct( $statsFactory, IBufferingStatsdDataFactory $statsd ) {
		$this->statsFactory = $statsFactory ? $statsFactory->withComponent( 'Nsfwoid' ) : null;
		$this->statsd = $statsd;
	}

	/**
	 * @param string $name one of those above
	 * @param string[] $labels by key
	 */
	public function increment( string $name, array $labels = [] ): void {
		$statsdName = implode( '.', [ 'Nsfwoid', $name, ...array_values( $labels ) ] );
		if ( !$this->statsFactory ) {
			$this->statsd->increment( $statsdName );
			return;
		}
		$counter = $this->statsFactory->getCounter( $name );
		foreach ( $labels as $key => $value ) {
			$counter->setLabel( $key, $value );
		}
		$counter->copyToStatsdAt( $statsdName )->increment();
	}
}
