<?php

namespace MediaWiki\Extension\Nsfwoid\Api;

use ApiBase;
use ApiMain;
use MediaWiki\Extension\Nsfwoid\ReviewQueue;
use MediaWiki\Extension\Nsfwoid\VerdictStore;
use Wikimedia\ParamValidator\ParamValidator;

/**
 * action=nsfwoidreview: marks the current version of a local file reviewed, so that it leaves
 * the review queue's default view, and with `verdict`, records the reviewer's verdict on it,
 * explicit or not, with its stored score and model (VerdictStore). Where the wiki patrols
 * uploads, marking patrols the upload's recent-changes row, and needs the right `patrol` as well
 * as `nsfwoid-review`. With `sha1`, only if the current version still has those bytes: what the
 * reviewer saw.
 */
class ApiNsfwoidReview extends ApiBase {

	private ReviewQueue $reviewQueue;
	private VerdictStore $verdicts;

	public function __construct( ApiMain $main, string $action, ReviewQueue $reviewQueue, VerdictStore $verdicts ) {
		parent::__construct( $main, $action );
		$this->reviewQueue = $reviewQueue;
		$this->verdicts = $verdicts;
	}

	public function execute() {
		$this->checkUserRightsAny( 'nsfwoid-review' );
		$params = $this->extractRequestParams();
		$title = $this->getTitleFromTitleOrPageId( [ 'title' => $params['title'] ] );
		$status = $params['verdict'] === null
			? $this->reviewQueue->markReviewed( $title, $params['sha1'], $this->getAuthority() )
			: $this->verdicts->record( $title, $params['sha1'], $params['verdict'], $this->getAuthority() );
		if ( !$status->isGood() ) {
			$this->dieStatus( $status );
		}
		$answer = [ 'title' => $title->getPrefixedText(), 'reviewed' => true ];
		if ( $params['verdict'] === null ) {
			$answer['sha1'] = $status->getValue();
		} else {
			$answer += $status->getValue() + [ 'verdict' => $params['verdict'] ];
		}
		$this->getResult()->addValue( null, $this->getModuleName(), $answer );
	}

	public function mustBePosted() {
		return true;
	}

	public function isWriteMode() {
		return true;
	}

	public function needsToken() {
		return 'csrf';
	}

	public function getAllowedParams() {
		return [
			'title' => [
				ParamValidator::PARAM_TYPE => 'string',
				ParamValidator::PARAM_REQUIRED => true,
			],
			'verdict' => [ ParamValidator::PARAM_TYPE => VerdictStore::VERDICTS ],
			'sha1' => [ ParamValidator::PARAM_TYPE => 'string' ],
		];
	}

	protected function getExamplesMessages() {
		return [
			'action=nsfwoidreview&title=File:Example.jpg&token=123ABC'
				=> 'apihelp-nsfwoidreview-example-simple',
			'action=nsfwoidreview&title=File:Example.jpg&verdict=explicit&token=123ABC'
				=> 'apihelp-nsfwoidreview-example-verdict',
		];
	}
}
