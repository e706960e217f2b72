<?php

namespace MediaWiki\Extension\Nsfwoid;

use Wikimedia\Rdbms\IDatabase;
use Wikimedia\Rdbms\ILoadBalancer;

/**
 * The tables nsfwoid_score and nsfwoid_model: one score per file content, keyed by the base-36
 * SHA-1 that image.img_sha1 also holds, so that every copy and every reuse of a file shares its
 * score. Each score names its model by a small id; nsfwoid_model maps the id to the sha256 that
 * the service gives, which is what callers pass and get.
 */
class ScoreStore {

	private ILoadBalancer $loadBalancer;
	private Metrics $metrics;
	/** @var int[][] model id by database domain and sha256: ids never change once given */
	private array $modelIds = [];
	/** @var int[] model id by sha256, of the models this process has stored scores of */
	private array $acquiredModelIds = [];

	public function __construct( ILoadBalancer $loadBalancer, Metrics $metrics ) {
		$this->loadBalancer = $loadBalancer;
		$this->metrics = $metrics;
	}

	/**
	 * @param string[] $sha1s base 36
	 * @param string $model sha256: only scores of this model count
	 * @param IDatabase|null $db another wiki's database that holds the tables, such as the
	 *   repository wiki of a ForeignDBViaLBRepo; by default this wiki's replica
	 * @return float[] score by SHA-1, for those that have one
	 */
	public function getScores( array $sha1s, string $model, ?IDatabase $db = null ): array {
		if ( !$sha1s ) {
			return [];
		}
		$db ??= $this->loadBalancer->getConnection( DB_REPLICA );
		$modelId = $this->findModelId( $db, $model );
		if ( $modelId === null ) {
			return [];
		}
		$rows = $db->select(
			'nsfwoid_score',
			[ 'nss_sha1', 'nss_score' ],
			[ 'nss_sha1' => array_values( $sha1s ), 'nss_model' => $modelId ],
			__METHOD__
		);
		$scores = [];
		foreach ( $rows as $row ) {
			$scores[$row->nss_sha1] = (float)$row->nss_score;
		}
		return $scores;
	}

	/**
	 * The stored rows of these SHA-1s, whatever their model, for readers such as the API.
	 *
	 * @param string[] $sha1s base 36
	 * @param IDatabase|null $db as for getScores()
	 * @return array[] by SHA-1: score, sha1, model (sha256), timestamp (ISO 8601)
	 */
	public function getRows( array $sha1s, ?IDatabase $db = null ): array {
		if ( !$sha1s ) {
			return [];
		}
		$db ??= $this->loadBalancer->getConnection( DB_REPLICA );
		$rows = $db->select(
			[ 'nsfwoid_score', 'nsfwoid_model' ],
			[ 'nss_sha1', 'nss_score', 'nsm_sha256', 'nss_timestamp' ],
			[ 'nss_sha1' => array_values( $sha1s ) ],
			__METHOD__,
			[],
			[ 'nsfwoid_model' => [ 'JOIN', 'nsm_id = nss_model' ] ]
		);
		$found = [];
		foreach ( $rows as $row ) {
			$found[$row->nss_sha1] = [
				'score' => (float)$row->nss_score,
				'sha1' => $row->nss_sha1,
				'model' => $row->nsm_sha256,
				'timestamp' => wfTimestamp( TS_ISO_8601, $row->nss_timestamp ),
			];
		}
		return $found;
	}

	/**
	 * The sha256 of the model of the newest stored score: the service's model when it was last
	 * reached.
	 */
	public function getNewestModel(): ?string {
		return $this->getNewest()->nsm_sha256 ?? null;
	}

	/**
	 * The id of that model, for readers that query nsfwoid_score themselves (the review queue).
	 */
	public function getNewestModelId(): ?int {
		$newest = $this->getNewest();
		return $newest ? (int)$newest->nss_model : null;
	}

	/**
	 * @return \stdClass|false nss_model and nsm_sha256 of the newest score
	 */
	private function getNewest() {
		$dbr = $this->loadBalancer->getConnection( DB_REPLICA );
		$newest = $dbr->selectRow(
			[ 'nsfwoid_score', 'nsfwoid_model' ],
			[ 'nss_model', 'nsm_sha256' ],
			[],
			__METHOD__,
			[ 'ORDER BY' => 'nss_timestamp DESC' ],
			[ 'nsfwoid_model' => [ 'JOIN', 'nsm_id = nss_model' ] ]
		);
		if ( $newest ) {
			// The reads that follow, such as getScores() of this model, need not look its id up again.
			$this->modelIds[$dbr->getDomainID()][$newest->nsm_sha256] = (int)$newest->nss_model;
		}
		return $newest;
	}

	public function save( ServiceScore $score ): void {
		$dbw = $this->loadBalancer->getConnection( DB_PRIMARY );
		$values = [
			'nss_score' => $score->score,
			'nss_model' => $this->acquireModelId( $score->model, $score->modelName ),
			// In the database's own form: PostgreSQL's TIMESTAMPTZ does not read MediaWiki's.
			'nss_timestamp' => $dbw->timestamp(),
		];
		$dbw->upsert(
			'nsfwoid_score', [ 'nss_sha1' => $score->sha1 ] + $values, 'nss_sha1', $values, __METHOD__
		);
		$this->metrics->increment( 'scores_stored_total' );
	}

	/**
	 * The next $limit local files after $after, in name order, each with whether it has a score
	 * of $model. A call reads at most $limit rows of `image`, however many of them are scored:
	 * asking for the next unscored files instead would scan every scored one in between.
	 *
	 * @param string $model sha256
	 * @param string $after
	 * @param int $limit
	 * @return array[] each [ 'name' => string, 'scored' => bool ], in name order
	 */
	public function getFileBatch( string $model, string $after, int $limit ): array {
		$dbr = $this->loadBalancer->getConnection( DB_REPLICA );
		$result = $dbr->select(
			[ 'image', 'nsfwoid_score' ],
			[ 'img_name', 'nss_sha1' ],
			[ 'img_name > ' . $dbr->addQuotes( $after ) ],
			__METHOD__,
			[ 'ORDER BY' => 'img_name', 'LIMIT' => $limit ],
			// No model has the id 0: a model with no id yet has no scores.
			[ 'nsfwoid_score' => [ 'LEFT JOIN', [
				'nss_sha1 = img_sha1', 'nss_model' => $this->findModelId( $dbr, $model ) ?? 0
			] ] ]
		);
		$files = [];
		foreach ( $result as $row ) {
			$files[] = [ 'name' => (string)$row->img_name, 'scored' => $row->nss_sha1 !== null ];
		}
		return $files;
	}

	/**
	 * The stored score of one content and its model's id, whatever the model, from the primary
	 * database: what a reviewer's verdict records.
	 *
	 * @param string $sha1 base 36
	 * @return array|null [ 'score' => float, 'model' => int ]
	 */
	public function getStoredScore( string $sha1 ): ?array {
		$row = $this->loadBalancer->getConnection( DB_PRIMARY )->selectRow(
			'nsfwoid_score', [ 'nss_score', 'nss_model' ], [ 'nss_sha1' => $sha1 ], __METHOD__
		);
		return $row ? [ 'score' => (float)$row->nss_score, 'model' => (int)$row->nss_model ] : null;
	}

	/**
	 * The scores of a model among the most recent local uploads, newest first: the current
	 * version of each file, walked by upload time, at most $limit.
	 *
	 * @param int $model nsfwoid_model.nsm_id
	 * @param int $limit
	 * @return float[]
	 */
	public function getRecentUploadScores( int $model, int $limit ): array {
		$dbr = $this->loadBalancer->getConnection( DB_REPLICA );
		return array_map( 'floatval', $dbr->selectFieldValues(
			[ 'image', 'nsfwoid_score' ],
			'nss_score',
			[ 'nss_model' => $model ],
			__METHOD__,
			[ 'ORDER BY' => 'img_timestamp DESC', 'LIMIT' => $limit ],
			[ 'nsfwoid_score' => [ 'JOIN', 'nss_sha1 = img_sha1' ] ]
		) );
	}

	/**
	 * The id of a model in $db's nsfwoid_model, or null when no score of it was ever stored there.
	 */
	private function findModelId( IDatabase $db, string $sha256 ): ?int {
		$domain = $db->getDomainID();
		if ( !isset( $this->modelIds[$domain][$sha256] ) ) {
			$id = $db->selectField( 'nsfwoid_model', 'nsm_id', [ 'nsm_sha256' => $sha256 ], __METHOD__ );
			if ( $id === false ) {
				return null;
			}
			$this->modelIds[$domain][$sha256] = (int)$id;
		}
		return $this->modelIds[$domain][$sha256];
	}

	/**
	 * The id of a model in this wiki's nsfwoid_model, given to it now if it has none. A model that
	 * scores migrated from the sha256-keyed schema left nameless gets its name when the service gives it.
	 */
	private function acquireModelId( string $sha256, ?string $name ): int {
		if ( isset( $this->acquiredModelIds[$sha256] ) ) {
			return $this->acquiredModelIds[$sha256];
		}
		$dbw = $this->loadBalancer->getConnection( DB_PRIMARY );
		$model = [ 'nsm_sha256' => $sha256 ];
		$row = $dbw->selectRow( 'nsfwoid_model', [ 'nsm_id', 'nsm_name' ], $model, __METHOD__ );
		if ( !$row ) {
			$dbw->insert( 'nsfwoid_model', $model + [
				'nsm_name' => $name ?? '', 'nsm_first_seen' => $dbw->timestamp(),
			], __METHOD__, [ 'IGNORE' ] );
			$row = $dbw->selectRow( 'nsfwoid_model', [ 'nsm_id', 'nsm_name' ], $model, __METHOD__ );
		} elseif ( $row->nsm_name === '' && $name !== null && $name !== '' ) {
			$dbw->update( 'nsfwoid_model', [ 'nsm_name' => $name ], [ 'nsm_id' => $row->nsm_id ], __METHOD__ );
		}
		return $this->acquiredModelIds[$sha256] = (int)$row->nsm_id;
	}
}
