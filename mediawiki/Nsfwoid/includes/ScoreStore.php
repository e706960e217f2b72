<?php

namespace MediaWiki\Extension\Nsfwoid;

use Wikimedia\Rdbms\IDatabase;
use Wikimedia\Rdbms\ILoadBalancer;

/**
 * The table nsfwoid_score: one score per file content, keyed by the base-36 SHA-1 that
 * image.img_sha1 also holds, so that every copy and every reuse of a file shares its score.
 */
class ScoreStore {

	private ILoadBalancer $loadBalancer;

	public function __construct( ILoadBalancer $loadBalancer ) {
		$this->loadBalancer = $loadBalancer;
	}

	/**
	 * @param string[] $sha1s base 36
	 * @param string $model only scores of this model count
	 * @param IDatabase|null $db another wiki's database that holds the table, such as the
	 *   repository wiki of a ForeignDBViaLBRepo; by default this wiki's replica
	 * @return float[] score by SHA-1, for those that have one
	 */
	public function getScores( array $sha1s, string $model, ?IDatabase $db = null ): array {
		if ( !$sha1s ) {
			return [];
		}
		$db ??= $this->loadBalancer->getConnection( DB_REPLICA );
		$rows = $db->select(
			'nsfwoid_score',
			[ 'nss_sha1', 'nss_score' ],
			[ 'nss_sha1' => array_values( $sha1s ), 'nss_model' => $model ],
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
	 * @return array[] by SHA-1: score, sha1, model, timestamp (ISO 8601)
	 */
	public function getRows( array $sha1s, ?IDatabase $db = null ): array {
		if ( !$sha1s ) {
			return [];
		}
		$db ??= $this->loadBalancer->getConnection( DB_REPLICA );
		$rows = $db->select(
			'nsfwoid_score',
			[ 'nss_sha1', 'nss_score', 'nss_model', 'nss_timestamp' ],
			[ 'nss_sha1' => array_values( $sha1s ) ],
			__METHOD__
		);
		$found = [];
		foreach ( $rows as $row ) {
			$found[$row->nss_sha1] = [
				'score' => (float)$row->nss_score,
				'sha1' => $row->nss_sha1,
				'model' => $row->nss_model,
				'timestamp' => wfTimestamp( TS_ISO_8601, $row->nss_timestamp ),
			];
		}
		return $found;
	}

	/**
	 * The model of the newest stored score: the service's model when it was last reached.
	 */
	public function getNewestModel(): ?string {
		$model = $this->loadBalancer->getConnection( DB_REPLICA )->selectField(
			'nsfwoid_score',
			'nss_model',
			[],
			__METHOD__,
			[ 'ORDER BY' => 'nss_timestamp DESC' ]
		);
		return $model === false ? null : $model;
	}

	public function save( ServiceScore $score ): void {
		$values = [ 'nss_score' => $score->score, 'nss_model' => $score->model, 'nss_timestamp' => wfTimestampNow() ];
		$this->loadBalancer->getConnection( DB_PRIMARY )->upsert(
			'nsfwoid_score', [ 'nss_sha1' => $score->sha1 ] + $values, 'nss_sha1', $values, __METHOD__
		);
	}

	/**
	 * The next $limit local files after $after, in name order, each with whether it has a score
	 * of $model. A call reads at most $limit rows of `image`, however many of them are scored:
	 * asking for the next unscored files instead would scan every scored one in between.
	 *
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
			self::scoreOfModel( $model )
		);
		$files = [];
		foreach ( $result as $row ) {
			$files[] = [ 'name' => (string)$row->img_name, 'scored' => $row->nss_sha1 !== null ];
		}
		return $files;
	}

	/**
	 * Join conditions: each image row with its score of $model, if any.
	 */
	private static function scoreOfModel( string $model ): array {
		return [ 'nsfwoid_score' => [ 'LEFT JOIN', [ 'nss_sha1 = img_sha1', 'nss_model' => $model ] ] ];
	}
}
