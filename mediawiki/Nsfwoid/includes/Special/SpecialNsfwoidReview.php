<?php

namespace MediaWiki\Extension\Nsfwoid\Special;

use Html;
use HTMLForm;
use MediaWiki\Extension\Nsfwoid\Hooks\PreferencesHooks;
use MediaWiki\Extension\Nsfwoid\ReviewQueue;
use MediaWiki\Extension\Nsfwoid\ScoreStore;
use MediaWiki\Extension\Nsfwoid\VerdictStore;
use MediaWiki\User\UserOptionsLookup;
use RepoGroup;
use SpecialPage;
use StatusValue;
use Title;
use WebRequest;

/**
 * Special:NsfwoidReview: recent uploads at or above a score, most recent first, for patrollers to
 * look at and mark reviewed; by default those not yet reviewed (ReviewQueue). The scores are
 * advice: the page links each file for a person to judge. Thumbnails are blurred until a click
 * reveals one; a preference turns the blur off, and `blur=0` or `blur=1` in the URL overrides
 * it. Needs the right `nsfwoid-review`.
 */
class SpecialNsfwoidReview extends SpecialPage {

	private ScoreStore $store;
	private RepoGroup $repoGroup;
	private UserOptionsLookup $userOptionsLookup;
	private ReviewQueue $reviewQueue;
	private VerdictStore $verdicts;

	public function __construct(
		ScoreStore $store, RepoGroup $repoGroup, UserOptionsLookup $userOptionsLookup, ReviewQueue $reviewQueue,
		VerdictStore $verdicts
	) {
		parent::__construct( 'NsfwoidReview', 'nsfwoid-review' );
		$this->store = $store;
		$this->repoGroup = $repoGroup;
		$this->userOptionsLookup = $userOptionsLookup;
		$this->reviewQueue = $reviewQueue;
		$this->verdicts = $verdicts;
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
		$minScore = min( 1.0, max( 0.0, $request->getFloat( 'minscore', 0.5 ) ) );
		$since = $request->getVal( 'since' ) ?: null;
		$show = $request->getVal( 'show' );
		$show = in_array( $show, ReviewQueue::SHOW, true ) ? $show : ReviewQueue::UNREVIEWED;
		$query = array_filter(
			[ 'minscore' => $minScore, 'since' => $since, 'show' => $show, 'blur' => $blur ? '1' : '0' ], 'is_scalar'
		);

		if ( $request->wasPosted() && $request->getCheck( 'reviewtitle' ) ) {
			$status = $this->markReviewed( $request );
			if ( $status->isGood() ) {
				// Post/Redirect/Get: a reload does not post the mark again.
				$output->redirect( $this->getPageTitle()->getFullURL( $query ) );
				return;
			}
			$output->addHTML( Html::errorBox( $this->statusHtml( $status ) ) );
		}

		$output->addModuleStyles( 'ext.nsfwoid.review.styles' );
		$output->addModules( 'ext.nsfwoid.review' );
		$output->addWikiMsg( 'nsfwoid-review-intro' );
		HTMLForm::factory( 'ooui', [
			'minscore' => [
				'type' => 'float', 'name' => 'minscore', 'default' => $minScore, 'min' => 0, 'max' => 1,
				'label-message' => 'nsfwoid-review-minscore',
			],
			'since' => [
				'type' => 'date', 'name' => 'since', 'default' => $since ?? '',
				'label-message' => 'nsfwoid-review-since',
			],
			'show' => [
				'type' => 'select', 'name' => 'show', 'default' => $show,
				'label-message' => 'nsfwoid-review-show',
				'options-messages' => [
					'nsfwoid-review-show-unreviewed' => ReviewQueue::UNREVIEWED,
					'nsfwoid-review-show-reviewed' => ReviewQueue::REVIEWED,
					'nsfwoid-review-show-all' => ReviewQueue::ALL,
				],
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
			$this->getContext(), $this->getLinkRenderer(), $this->repoGroup, $this->reviewQueue, $model, $minScore,
			$since === null ? null : $since . 'T00:00:00Z', $blur, $show, $this->getPageTitle()->getLocalURL( $query )
		);
		$output->addParserOutputContent( $pager->getFullOutput() );
	}

	/**
	 * A row's plain form: a verdict, or only a mark, as action=nsfwoidreview records them.
	 */
	private function markReviewed( WebRequest $request ): StatusValue {
		if ( !$this->getContext()->getCsrfTokenSet()->matchTokenField( 'wpEditToken' ) ) {
			return StatusValue::newFatal( 'sessionfailure' );
		}
		$title = Title::newFromText( $request->getVal( 'reviewtitle', '' ), NS_FILE );
		$sha1 = $request->getVal( 'reviewsha1' );
		$verdict = $request->getVal( 'reviewverdict' );
		if ( $verdict !== null ) {
			return in_array( $verdict, VerdictStore::VERDICTS, true )
				? $this->verdicts->record( $title, $sha1, $verdict, $this->getAuthority() )
				: StatusValue::newFatal( 'nsfwoid-verdict-unknown' );
		}
		return $this->reviewQueue->markReviewed( $title, $sha1, $this->getAuthority() );
	}

	private function statusHtml( StatusValue $status ): string {
		// MediaWiki 1.43's getMessages(), or 1.39's error arrays
		$messages = method_exists( $status, 'getMessages' )
			? $status->getMessages()
			: array_map( static fn ( array $error ) => [ $error['message'], ...$error['params'] ], $status->getErrors() );
		return implode( '', array_map( fn ( $message ) => Html::rawElement( 'p', [],
			is_array( $message ) ? $this->msg( ...$message )->parse() : $this->msg( $message )->parse()
		), $messages ) );
	}

	protected function getGroupName() {
		return 'media';
	}
}
