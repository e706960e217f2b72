<?php

namespace MediaWiki\Extension\Nsfwoid;

use MediaWiki\Permissions\Authority;
use stdClass;
use Wikimedia\Rdbms\IDatabase;

/**
 * Uploaders whose name a block hides (hideuser, ipb_deleted), for the review queue: their name is
 * shown only to readers who have the right `hideuser`, as MediaWiki's own lists of users do.
 * The queries that use this join `actor` on the file's uploader.
 */
class HiddenUploaders {

	/**
	 * What to add to a query of `image` joined with `actor`: nothing for a reader who may see
	 * hidden names, else each row's active hiding block, if any.
	 *
	 * @return array[] tables, fields and join_conds
	 */
	public static function queryInfo( IDatabase $db, Authority $reader ): array {
		if ( $reader->isAllowed( 'hideuser' ) ) {
			return [ 'tables' => [], 'fields' => [], 'join_conds' => [] ];
		}
		return [
			'tables' => [ 'hiding_block' => 'ipblocks' ],
			'fields' => [ 'hiding_block' => 'hiding_block.ipb_id' ],
			'join_conds' => [ 'hiding_block' => [ 'LEFT JOIN', [
				'hiding_block.ipb_user = actor_user',
				'hiding_block.ipb_deleted' => 1,
				'hiding_block.ipb_expiry > ' . $db->addQuotes( $db->timestamp() ),
			] ] ],
		];
	}

	/**
	 * Whether a row of such a query has an uploader whose name its reader may not see.
	 */
	public static function isHidden( stdClass $row ): bool {
		return isset( $row->hiding_block );
	}
}
