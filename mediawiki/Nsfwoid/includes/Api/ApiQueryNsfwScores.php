<?php

namespace MediaWiki\Extension\Nsfwoid\Api;

use ApiBase;
use ApiQuery;
use ApiQueryBase;
use MediaWiki\Extension\Nsfwoid\ReviewQueue;
use MediaWiki\Extension\Nsfwoid\ScoreStore;
use Title;
use Wikimedia\ParamValidator\ParamValidator;
use Wikimedia\ParamValidator\TypeDef\IntegerDef;

/**
 * list=nsfwscores: the local files whose current version has a stored score at or above a
 * threshold, newest upload first, for patrollers to review: by default those not yet reviewed
 * (ReviewQueue). A list of the highest-scoring files is a finding aid for explicit content, so
 * it needs the right `nsfwoid-review`.
 *
 * "Current model" is the model of the newest stored score, as when the service cannot be
 * reached: the list never waits on the service.
 */
class ApiQueryNsfwScores extends ApiQueryBase {

	private ScoreStore $store;
	private ReviewQueue $reviewQueue;

	public function __construct( ApiQuery $query, string $moduleName, ScoreStore $store, ReviewQueue $reviewQueue ) {
		parent::__construct( $query, $moduleName, 'ns' );
		$this->store = $store;
		$this->reviewQueue = $reviewQueue;
	}

	public function execute() {
		$this->checkUserRightsAny( 'nsfwoid-review' );
		$params = $this->extractRequestParams();
		$minScore = is_numeric( $params['minscore'] ) ? (float)$params['minscore'] : -1.0;
		if ( $minScore < 0 || $minScore > 1 ) {
			$this->dieWithError( [ 'apierror-nsfwoid-minscore', 'nsminscore' ], 'badminscore' );
		}
		$props = array_flip( $params['prop'] );
		$model = $this->store->getNewestModelId();
		if ( $model === null ) {
			return;
		}
		$db = $this->getDB();
		$queue = $this->reviewQueue->queryInfo( $db, $this->getAuthority(), $model, $minScore, $params['show'] );
		$this->addTables( $queue['tables'] );
		$this->addFields( $queue['fields'] );
		$this->addWhere( $queue['conds'] );
		$this->addJoinConds( $queue['join_conds'] );
		$older = $params['dir'] === 'older';
		// Sorted by timestamp, then by name for a stable order among uploads of the same second.
		$this->addTimestampWhereRange( 'img_timestamp', $params['dir'], $params['start'], $params['end'], false );
		if ( $params['continue'] !== null ) {
			$cont = explode( '|', $params['continue'], 2 );
			$this->dieContinueUsageIf( count( $cont ) != 2 );
			$op = $older ? '<' : '>';
			$timestamp = $db->addQuotes( $db->timestamp( $cont[0] ) );
			$name = $db->addQuotes( $cont[1] );
			$this->addWhere( "img_timestamp $op $timestamp OR (img_timestamp = $timestamp AND img_name $op= $name)" );
		}
		$sort = $older ? ' DESC' : '';
		$this->addOption( 'ORDER BY', [ 'img_timestamp' . $sort, 'img_name' . $sort ] );
		$this->addOption( 'LIMIT', $params['limit'] + 1 );

		$count = 0;
		$result = $this->getResult();
		foreach ( $this->select( __METHOD__ ) as $row ) {
			if ( ++$count > $params['limit'] ) {
				$this->setContinueEnumParameter( 'continue',
					wfTimestamp( TS_ISO_8601, $row->img_timestamp ) . '|' . $row->img_name );
				break;
			}
			$entry = [];
			$title = Title::makeTitle( NS_FILE, $row->img_name );
			if ( isset( $props['title'] ) ) {
				ApiQueryBase::addTitleInfo( $entry, $title );
			}
			if ( isset( $props['score'] ) ) {
				$entry['score'] = (float)$row->nss_score;
			}
			if ( isset( $props['sha1'] ) ) {
				$entry['sha1'] = $row->img_sha1;
			}
			if ( isset( $props['reviewed'] ) ) {
				$entry['reviewed'] = ReviewQueue::isReviewed( $row );
			}
			if ( isset( $props['verdict'] ) ) {
				$entry['verdict'] = ReviewQueue::verdictOf( $row );
			}
			if ( isset( $props['timestamp'] ) ) {
				$entry['timestamp'] = wfTimestamp( TS_ISO_8601, $row->img_timestamp );
			}
			if ( isset( $props['user'] ) ) {
				// A current version cannot be revision-deleted, only older ones, which are not listed; a
				// block that hides the uploader's name hides it here too, as in prop=imageinfo.
				if ( ReviewQueue::isUploaderHidden( $row ) ) {
					$entry['userhidden'] = true;
				} else {
					$entry['user'] = $row->actor_name;
				}
			}
			if ( !$result->addValue( [ 'query', $this->getModuleName() ], null, $entry ) ) {
				$this->setContinueEnumParameter( 'continue',
					wfTimestamp( TS_ISO_8601, $row->img_timestamp ) . '|' . $row->img_name );
				break;
			}
		}
		$result->addIndexedTagName( [ 'query', $this->getModuleName() ], 'file' );
	}

	public function getCacheMode( $params ) {
		return 'private';
	}

	public function getAllowedParams() {
		return [
			// A number from 0 to 1; MediaWiki 1.39's API has no float type.
			'minscore' => [
				ParamValidator::PARAM_TYPE => 'string',
				ParamValidator::PARAM_DEFAULT => '0.5',
			],
			'show' => [
				ParamValidator::PARAM_TYPE => ReviewQueue::SHOW,
				ParamValidator::PARAM_DEFAULT => ReviewQueue::UNREVIEWED,
			],
			'start' => [ ParamValidator::PARAM_TYPE => 'timestamp' ],
			'end' => [ ParamValidator::PARAM_TYPE => 'timestamp' ],
			'dir' => [
				ParamValidator::PARAM_TYPE => [ 'newer', 'older' ],
				ParamValidator::PARAM_DEFAULT => 'older',
				ApiBase::PARAM_HELP_MSG => 'api-help-param-direction',
			],
			'prop' => [
				ParamValidator::PARAM_TYPE => [ 'title', 'score', 'sha1', 'timestamp', 'user', 'reviewed', 'verdict' ],
				ParamValidator::PARAM_DEFAULT => 'title|score|timestamp',
				ParamValidator::PARAM_ISMULTI => true,
			],
			'limit' => [
				ParamValidator::PARAM_TYPE => 'limit',
				ParamValidator::PARAM_DEFAULT => 10,
				IntegerDef::PARAM_MIN => 1,
				IntegerDef::PARAM_MAX => ApiBase::LIMIT_SML1,
				IntegerDef::PARAM_MAX2 => ApiBase::LIMIT_SML2,
			],
			'continue' => [ ApiBase::PARAM_HELP_MSG => 'api-help-param-continue' ],
		];
	}

	protected function getExamplesMessages() {
		return [
			'action=query&list=nsfwscores&nsminscore=0.8&nsprop=title|score|user|timestamp'
				=> 'apihelp-query+nsfwscores-example-simple',
		];
	}
}
