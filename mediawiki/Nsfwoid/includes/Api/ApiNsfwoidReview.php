<?php

namespace MediaWiki\Extension\Nsfwoid\Api;

use ApiBase;
use ApiMain;
use MediaWiki\Extension\Nsfwoid\ReviewQueue;
use Wikimedia\ParamValidator\ParamValidator;

/**
 * action=nsfwoidreview: marks the current version of a local file reviewed, so that it leaves
 * the review queue's default view. Where the wiki patrols uploads, this patrols the upload's
 * recent-changes row, and needs the right `patrol` as well as `nsfwoid-review`. With `sha1`,
 * only if the current version still has those bytes: what the reviewer saw.
 */
class ApiNsfwoidReview extends ApiBase {

	private ReviewQueue $reviewQueue;

	public function __construct( ApiMain $main, string $action, ReviewQueue $reviewQueue ) {
		parent::__construct( $main, $action );
		$this->reviewQueue = $reviewQueue;
	}

	public function execute() {
		$this->checkUserRightsAny( 'nsfwoid-review' );
		$params = $this->extractRequestParams();
		$title = $this->getTitleFromTitleOrPageId( [ 'title' => $params['title'] ] );
		$status = $this->reviewQueue->markReviewed( $title, $params['sha1'], $this->getAuthority() );
		if ( !$status->isGood() ) {
			$this->dieStatus( $status );
		}
		$this->getResult()->addValue( null, $this->getModuleName(),
			[ 'title' => $title->getPrefixedText(), 'sha1' => $status->getValue(), 'reviewed' => true ] );
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
			'sha1' => [ ParamValidator::PARAM_TYPE => 'string' ],
		];
	}

	protected function getExamplesMessages() {
		return [
			'action=nsfwoidreview&title=File:Example.jpg&token=123ABC'
				=> 'apihelp-nsfwoidreview-example-simple',
		];
	}
}
