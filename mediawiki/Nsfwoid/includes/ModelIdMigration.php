<?php

namespace MediaWiki\Extension\Nsfwoid;

use DatabaseUpdater;
use MediaWiki\MediaWikiServices;

/**
 * update.php's step from the sha256-keyed schema, where nss_model held the model's sha256 in 64 bytes of
 * hex, to nsfwoid_model's ids. It gives each model found in nsfwoid_score an id, first seen at its
 * oldest score, and writes that id into its scores, a batch at a time in primary key order, waiting
 * for replicas between batches. The generated patch then changes nss_model's type.
 *
 * It runs only while the sha256-keyed schema's index (nss_model, nss_sha1) exists, and it can be stopped
 * and run again: it converts only values that are still 64 characters of hex.
 */
class ModelIdMigration {

	private const BATCH_SIZE = 1000;

	public static function run( DatabaseUpdater $updater ): bool {
		$db = $updater->getDB();
		if ( !$db->tableExists( 'nsfwoid_score', __METHOD__ )
			|| !$db->indexExists( 'nsfwoid_score', 'nss_model_sha1', __METHOD__ )
		) {
			$updater->output( "...nsfwoid_score already names each model by its id.\n" );
			return true;
		}
		$lbFactory = MediaWikiServices::getInstance()->getDBLoadBalancerFactory();
		$models = $db->select(
			'nsfwoid_score',
			[ 'nss_model', 'first_seen' => 'MIN(nss_timestamp)' ],
			[ 'LENGTH(nss_model) = 64' ],
			__METHOD__,
			[ 'GROUP BY' => 'nss_model' ]
		);
		foreach ( $models as $model ) {
			$db->insert( 'nsfwoid_model', [
				'nsm_sha256' => $model->nss_model,
				'nsm_name' => '',
				'nsm_first_seen' => $db->timestamp( $model->first_seen ),
			], __METHOD__, [ 'IGNORE' ] );
			$id = (int)$db->selectField( 'nsfwoid_model', 'nsm_id', [ 'nsm_sha256' => $model->nss_model ], __METHOD__ );
			$updater->output( "Giving model {$model->nss_model} the id $id in nsfwoid_score...\n" );
			do {
				// The sha256-keyed schema's index (nss_model, nss_sha1) finds each batch.
				$sha1s = $db->selectFieldValues( 'nsfwoid_score', 'nss_sha1', [ 'nss_model' => $model->nss_model ],
					__METHOD__, [ 'ORDER BY' => 'nss_sha1', 'LIMIT' => self::BATCH_SIZE ] );
				if ( $sha1s ) {
					$db->update( 'nsfwoid_score', [ 'nss_model' => $id ], [ 'nss_sha1' => $sha1s ], __METHOD__ );
					$lbFactory->waitForReplication();
				}
			} while ( $sha1s );
		}
		if ( $db->getType() === 'postgres' ) {
			// PostgreSQL turns text into a number only when told how, which the generated ALTER does not say.
			$db->query( 'ALTER TABLE ' . $db->tableName( 'nsfwoid_score' )
				. ' ALTER nss_model TYPE SMALLINT USING nss_model::smallint', __METHOD__ );
		}
		return true;
	}
}
