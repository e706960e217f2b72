<?php

namespace MediaWiki\Extension\Nsfwoid;

use MediaWiki\Permissions\Authority;
use stdClass;
use Wikimedia\Rdbms\IDatabase;

/**
 * The review queue's query, shared by list=nsfwscores and Special:NsfwoidReview: the local files
 * whose current version has a stored score of a model at or above a threshold, each with its
 * uploader. An uploader whose name a block hides (hideuser, ipb_deleted) is shown only to readers
 * who have the right `hideuser`, as MediaWiki's own lists of users do.
 */
class ReviewQueue {

	/**
	 * @param IDatabase $db
	 * @param Authority $reader who reads the queue
	 * @param int $model nsfwoid_model.nsm_id
	 * @param float $minScore
	 * @return array[] tables, fields (img_name, img_timestamp, img_sha1, nss_score, actor_name, and
	 *   what isUploaderHidden() reads), conds and join_conds
	 */
	public static function queryInfo( IDatabase $db, Authority $reader, int $model, float $minScore ): array {
		$info = [
			'tables' => [ 'image', 'nsfwoid_score', 'actor' ],
			'fields' => [ 'img_name', 'img_timestamp', 'img_sha1', 'nss_score', 'actor_name' ],
			'conds' => [ 'nss_model' => $model, 'nss_score >= ' . $db->addQuotes( $minScore ) ],
			'join_conds' => [
				'nsfwoid_score' => [ 'JOIN', 'nss_sha1 = img_sha1' ],
				'actor' => [ 'JOIN', 'actor_id = img_actor' ],
			],
		];
		if ( !$reader->isAllowed( 'hideuser' ) ) {
			// Each row's active hiding block, if any.
			$info['tables']['hiding_block'] = 'ipblocks';
			$info['fields']['hiding_block'] = 'hiding_block.ipb_id';
			$info['join_conds']['hiding_block'] = [ 'LEFT JOIN', [
				'hiding_block.ipb_user = actor_user',
				'hiding_block.ipb_deleted' => 1,
				'hiding_block.ipb_expiry > ' . $db->addQuotes( $db->timestamp() ),
			] ];
		}
		return $info;
	}

	/**
	 * Whether a row of that query has an uploader whose name its reader may not see.
	 */
	public static function isUploaderHidden( stdClass $row ): bool {
		return isset( $row->hiding_block );
	}
}
