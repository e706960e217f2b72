<?php

namespace MediaWiki\Extension\Nsfwoid;

use ApiMessage;
use File;
use MediaWiki\Block\HideUserUtils;
use MediaWiki\Config\ServiceOptions;
use MediaWiki\Permissions\Authority;
use MediaWiki\User\ActorNormalization;
use RecentChange;
use RepoGroup;
use StatusValue;
use stdClass;
use Title;
use Wikimedia\Rdbms\IDatabase;
use Wikimedia\Rdbms\ILoadBalancer;

/**
 * The review queue, shared by list=nsfwscores, action=nsfwoidreview and Special:NsfwoidReview:
 * the local files whose current version has a stored score of a model at or above a threshold,
 * each with its uploader and whether it has been reviewed.
 *
 * Where the wiki patrols uploads ($wgUseFilePatrol, on by default), a version is reviewed once
 * its upload's recent-changes row is patrolled, from this queue, Special:NewFiles or
 * RecentChanges alike; uploads by users with `autopatrol` arrive patrolled, and a version whose
 * row has left recent changes ($wgRCMaxAge) counts as reviewed, as Special:NewFiles' "hide
 * patrolled" treats it. Elsewhere a review is recorded in nsfwoid_review, by content: every copy
 * of reviewed bytes is reviewed, and a new version with other bytes is not.
 *
 * An uploader whose name a block hides is shown only to readers who have the right `hideuser`,
 * as MediaWiki's own lists of users do.
 */
class ReviewQueue {

	public const CONSTRUCTOR_OPTIONS = [ 'UseFilePatrol' ];

	/** Which rows a reader asks for */
	public const UNREVIEWED = 'unreviewed';
	public const REVIEWED = 'reviewed';
	public const ALL = 'all';
	public const SHOW = [ self::UNREVIEWED, self::REVIEWED, self::ALL ];

	private bool $useFilePatrol;
	private ILoadBalancer $loadBalancer;
	private RepoGroup $repoGroup;
	private ActorNormalization $actorNormalization;
	/** @var HideUserUtils|null MediaWiki 1.42 and later, where blocks are in `block` and `block_target` */
	private $hideUserUtils;

	/**
	 * @param ServiceOptions $options
	 * @param ILoadBalancer $loadBalancer
	 * @param RepoGroup $repoGroup
	 * @param ActorNormalization $actorNormalization
	 * @param HideUserUtils|null $hideUserUtils null before MediaWiki 1.42
	 */
	public function __construct(
		ServiceOptions $options, ILoadBalancer $loadBalancer, RepoGroup $repoGroup,
		ActorNormalization $actorNormalization, $hideUserUtils
	) {
		$options->assertRequiredOptions( self::CONSTRUCTOR_OPTIONS );
		$this->useFilePatrol = (bool)$options->get( 'UseFilePatrol' );
		$this->loadBalancer = $loadBalancer;
		$this->repoGroup = $repoGroup;
		$this->actorNormalization = $actorNormalization;
		$this->hideUserUtils = $hideUserUtils;
	}

	/**
	 * @param IDatabase $db
	 * @param Authority $reader who reads the queue
	 * @param int $model nsfwoid_model.nsm_id
	 * @param float $minScore
	 * @param string $show one of self::SHOW
	 * @return array[] tables, fields (img_name, img_timestamp, img_sha1, nss_score, actor_name, and
	 *   what isUploaderHidden(), isReviewed() and verdictOf() read), conds and join_conds
	 */
	public function queryInfo( IDatabase $db, Authority $reader, int $model, float $minScore, string $show ): array {
		$info = [
			'tables' => [ 'image', 'nsfwoid_score', 'actor', 'nsfwoid_verdict' ],
			'fields' => [ 'img_name', 'img_timestamp', 'img_sha1', 'nss_score', 'actor_name', 'nsv_explicit' ],
			'conds' => [ 'nss_model' => $model, 'nss_score >= ' . $db->addQuotes( $minScore ) ],
			'join_conds' => [
				'nsfwoid_score' => [ 'JOIN', 'nss_sha1 = img_sha1' ],
				'actor' => [ 'JOIN', 'actor_id = img_actor' ],
				'nsfwoid_verdict' => [ 'LEFT JOIN', 'nsv_sha1 = img_sha1' ],
			],
		];
		if ( $this->useFilePatrol ) {
			// The unpatrolled recent-changes row of the current version's upload, if any.
			$info['tables']['upload_rc'] = 'recentchanges';
			$info['fields']['unpatrolled_rc'] = 'upload_rc.rc_id';
			$info['join_conds']['upload_rc'] = [ 'LEFT JOIN', [
				'upload_rc.rc_namespace' => NS_FILE,
				'upload_rc.rc_title = img_name',
				'upload_rc.rc_timestamp = img_timestamp',
				'upload_rc.rc_type' => RC_LOG,
				'upload_rc.rc_log_type' => 'upload',
				'upload_rc.rc_patrolled' => RecentChange::PRC_UNPATROLLED,
			] ];
			$reviewed = 'upload_rc.rc_id IS NULL';
		} else {
			$info['tables'][] = 'nsfwoid_review';
			$info['fields'][] = 'nsr_sha1';
			$info['join_conds']['nsfwoid_review'] = [ 'LEFT JOIN', 'nsr_sha1 = img_sha1' ];
			$reviewed = 'nsr_sha1 IS NOT NULL';
		}
		if ( $show === self::UNREVIEWED ) {
			$info['conds'][] = "NOT ($reviewed)";
		} elseif ( $show === self::REVIEWED ) {
			$info['conds'][] = $reviewed;
		}
		if ( !$reader->isAllowed( 'hideuser' ) ) {
			$info['fields']['uploader_hidden'] = $db->conditional( $this->hiddenUserCondition( $db ), '1', '0' );
		}
		return $info;
	}

	/**
	 * Whether a row of that query has an uploader whose name its reader may not see.
	 */
	public static function isUploaderHidden( stdClass $row ): bool {
		return (bool)( $row->uploader_hidden ?? false );
	}

	public static function isReviewed( stdClass $row ): bool {
		return property_exists( $row, 'unpatrolled_rc' ) ? $row->unpatrolled_rc === null : $row->nsr_sha1 !== null;
	}

	/**
	 * A row's verdict: one of VerdictStore::VERDICTS, or null.
	 */
	public static function verdictOf( stdClass $row ): ?string {
		if ( $row->nsv_explicit === null ) {
			return null;
		}
		return $row->nsv_explicit ? VerdictStore::EXPLICIT : VerdictStore::NOT_EXPLICIT;
	}

	/**
	 * The current version of a local file, as a reviewer means it.
	 *
	 * @param Title|null $title
	 * @param string|null $sha1 base 36: only if the current version has these bytes, the ones the
	 *   reviewer saw
	 * @return StatusValue the File as its value; its errors are ApiMessages, with the codes
	 *   `nofile` and `changed` for the API
	 */
	public function findCurrentVersion( ?Title $title, ?string $sha1 ): StatusValue {
		$file = $title && $title->inNamespace( NS_FILE )
			? $this->repoGroup->getLocalRepo()->findFile( $title, [ 'latest' => true ] )
			: false;
		if ( !$file ) {
			$name = wfEscapeWikiText( $title ? $title->getPrefixedText() : '' );
			return StatusValue::newFatal( ApiMessage::create( [ 'apierror-nsfwoid-nofile', $name ], 'nofile' ) );
		}
		if ( $sha1 !== null && $sha1 !== $file->getSha1() ) {
			return StatusValue::newFatal( ApiMessage::create(
				[ 'apierror-nsfwoid-changed', wfEscapeWikiText( $title->getPrefixedText() ) ], 'changed'
			) );
		}
		return StatusValue::newGood( $file );
	}

	/**
	 * Marks the current version of a local file reviewed: patrols its upload where the wiki
	 * patrols uploads, which needs the right `patrol` too, or records the review of its content.
	 * The caller checks the right `nsfwoid-review`.
	 *
	 * @param Title|null $title
	 * @param string|null $sha1 as for findCurrentVersion()
	 * @param Authority $performer
	 * @return StatusValue good, with the version's SHA-1 as its value, when the version is
	 *   reviewed, whether by this call or before; errors as findCurrentVersion()'s, or the patrol's
	 */
	public function markReviewed( ?Title $title, ?string $sha1, Authority $performer ): StatusValue {
		$found = $this->findCurrentVersion( $title, $sha1 );
		return $found->isGood() ? $this->markFileReviewed( $found->getValue(), $performer ) : $found;
	}

	/**
	 * markReviewed() for a version that findCurrentVersion() found.
	 */
	public function markFileReviewed( File $file, Authority $performer ): StatusValue {
		$status = $this->useFilePatrol ? $this->patrol( $file, $performer ) : $this->record( $file, $performer );
		$status->value = $file->getSha1();
		return $status;
	}

	private function record( File $file, Authority $performer ): StatusValue {
		$dbw = $this->loadBalancer->getConnection( DB_PRIMARY );
		$values = [
			'nsr_actor' => $this->actorNormalization->acquireActorId( $performer->getUser(), $dbw ),
			'nsr_timestamp' => $dbw->timestamp(),
		];
		$dbw->upsert( 'nsfwoid_review', [ 'nsr_sha1' => $file->getSha1() ] + $values, 'nsr_sha1', $values, __METHOD__ );
		return StatusValue::newGood();
	}

	private function patrol( File $file, Authority $performer ): StatusValue {
		$dbw = $this->loadBalancer->getConnection( DB_PRIMARY );
		$change = RecentChange::newFromConds( [
			'rc_namespace' => NS_FILE,
			'rc_title' => $file->getTitle()->getDBkey(),
			'rc_timestamp' => $dbw->timestamp( $file->getTimestamp() ),
			'rc_type' => RC_LOG,
			'rc_log_type' => 'upload',
		], __METHOD__, DB_PRIMARY );
		if ( !$change ) {
			return StatusValue::newGood();  // gone from recent changes: nothing is left to patrol
		}
		if ( method_exists( $change, 'markPatrolled' ) ) {
			return $change->markPatrolled( $performer );  // MediaWiki 1.43
		}
		$status = StatusValue::newGood();
		foreach ( $change->doMarkPatrolled( $performer ) as $error ) {
			$status->fatal( ...$error );
		}
		return $status;
	}

	/**
	 * SQL that is true when a block hides the name of the uploader (actor_user).
	 */
	private function hiddenUserCondition( IDatabase $db ): string {
		if ( $this->hideUserUtils ) {
			return $this->hideUserUtils->getExpression( $db, 'actor_user', HideUserUtils::HIDDEN_USERS );
		}
		// Before MediaWiki 1.42: ipblocks
		return 'EXISTS(' . $db->selectSQLText( 'ipblocks', '1', [
			'ipb_user = actor_user',
			'ipb_deleted' => 1,
			'ipb_expiry > ' . $db->addQuotes( $db->timestamp() ),
		], __METHOD__ ) . ')';
	}
}
