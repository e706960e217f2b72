<?php

namespace MediaWiki\Extension\Nsfwoid\Special;

use HTMLForm;
use MediaWiki\Extension\Nsfwoid\Hooks\PreferencesHooks;
use MediaWiki\Extension\Nsfwoid\ScoreStore;
use MediaWiki\User\UserOptionsLookup;
use RepoGroup;
use SpecialPage;

/**
 * Special:NsfwoidReview: recent uploads at or above a score, most recent first, for patrollers to
 * look at. The scores are advice: the page links each file for a person to judge. Thumbnails are
 * blurred until a click reveals one; a preference turns the blur off, and `blur=0` or `blur=1` in
 * the URL overrides it. Needs the right `nsfwoid-review`.
 */
class SpecialNsfwoidReview extends SpecialPage {

	private ScoreStore $store;
	private RepoGroup $repoGroup;
	private UserOptionsLookup $userOptionsLookup;

	public function __construct( ScoreStore $store, RepoGroup $repoGroup, UserOptionsLookup $userOptionsLookup ) {
		parent::__construct( 'NsfwoidReview', 'nsfwoid-review' );
		$this->store = $store;
		$this->repoGroup = $repoGroup;
		$this->userOptionsLookup = $userOptionsLookup;
	}

	public function execute( $subPage ) {
		$this->setHeaders();
		$this->checkPermissions();
		$this->addHelpLink( 'Extension:Nsfwoid' );
		$output = $this->getOutput();
		$request = $this->getRequest();
		$blur = $request->getBool(
			'blur', !$this->userOptionsLookup->getBoolOption( $this->getUser(), PreferencesHooks::UNBLURRED )
		);
		$output->addModuleStyles( 'ext.nsfwoid.review.styles' );
		$output->addModules( 'ext.nsfwoid.review' );
		$output->addWikiMsg( 'nsfwoid-review-intro' );

		$minScore = min( 1.0, max( 0.0, $request->getFloat( 'minscore', 0.5 ) ) );
		$since = $request->getVal( 'since' ) ?: null;
		HTMLForm::factory( 'ooui', [
			'minscore' => [
				'type' => 'float', 'name' => 'minscore', 'default' => $minScore, 'min' => 0, 'max' => 1,
				'label-message' => 'nsfwoid-review-minscore',
			],
			'since' => [
				'type' => 'date', 'name' => 'since', 'default' => $since ?? '',
				'label-message' => 'nsfwoid-review-since',
			],
			'blur' => [ 'type' => 'hidden', 'name' => 'blur', 'default' => $blur ? '1' : '0' ],
		], $this->getContext() )
			->setMethod( 'get' )
			->setTitle( $this->getPageTitle() )
			->setWrapperLegendMsg( 'nsfwoid-review-legend' )
			->setSubmitTextMsg( 'nsfwoid-review-submit' )
			->prepareForm()
			->displayForm( false );

		$model = $this->store->getNewestModelId();
		if ( $model === null ) {
			$output->addWikiMsg( 'nsfwoid-review-empty' );
			return;
		}
		$pager = new NsfwoidReviewPager(
			$this->getContext(), $this->getLinkRenderer(), $this->repoGroup, $model, $minScore,
			$since === null ? null : $since . 'T00:00:00Z', $blur
		);
		$output->addParserOutputContent( $pager->getFullOutput() );
	}

	protected function getGroupName() {
		return 'media';
	}
}
