<?php

namespace MediaWiki\Extension\Nsfwoid\Special;

use Html;
use IContextSource;
use MediaWiki\Extension\Nsfwoid\ReviewQueue;
use MediaWiki\Extension\Nsfwoid\VerdictStore;
use MediaWiki\Linker\LinkRenderer;
use RepoGroup;
use stdClass;
use TablePager;
use Title;

/**
 * The rows of Special:NsfwoidReview: local files whose current version has a score of the model
 * of the newest stored score at or above a threshold, most recent upload first, each unreviewed
 * one with a button that marks it reviewed: a plain form, which ext.nsfwoid.review sends through
 * action=nsfwoidreview instead where JavaScript runs.
 */
class NsfwoidReviewPager extends TablePager {

	private const THUMBNAIL_WIDTH = 120;

	private RepoGroup $repoGroup;
	private ReviewQueue $reviewQueue;
	/** @var int nsfwoid_model.nsm_id */
	private int $model;
	private float $minScore;
	private ?string $since;
	private bool $blur;
	private string $show;
	/** @var string where the mark's form posts to: this page, as it is shown */
	private string $formAction;

	public function __construct(
		IContextSource $context, LinkRenderer $linkRenderer, RepoGroup $repoGroup, ReviewQueue $reviewQueue,
		int $model, float $minScore, ?string $since, bool $blur, string $show, string $formAction
	) {
		// Before the parent's constructor, which reads the sort.
		$this->mDefaultDirection = true;
		parent::__construct( $context, $linkRenderer );
		$this->repoGroup = $repoGroup;
		$this->reviewQueue = $reviewQueue;
		$this->model = $model;
		$this->minScore = $minScore;
		$this->since = $since;
		$this->blur = $blur;
		$this->show = $show;
		$this->formAction = $formAction;
	}

	public function getQueryInfo() {
		$db = $this->getDatabase();
		$queue = $this->reviewQueue->queryInfo( $db, $this->getAuthority(), $this->model, $this->minScore,
			$this->show );
		if ( $this->since !== null ) {
			$queue['conds'][] = 'img_timestamp >= ' . $db->addQuotes( $db->timestamp( $this->since ) );
		}
		return $queue;
	}

	protected function getFieldNames() {
		return [
			'thumbnail' => $this->msg( 'nsfwoid-review-thumbnail' )->text(),
			'img_name' => $this->msg( 'nsfwoid-review-file' )->text(),
			'nss_score' => $this->msg( 'nsfwoid-review-score' )->text(),
			'actor_name' => $this->msg( 'nsfwoid-review-uploader' )->text(),
			'img_timestamp' => $this->msg( 'nsfwoid-review-time' )->text(),
			'review' => $this->msg( 'nsfwoid-review-review' )->text(),
		];
	}

	public function formatValue( $name, $value ) {
		$row = $this->getCurrentRow();
		switch ( $name ) {
			case 'thumbnail':
				$file = $this->repoGroup->getLocalRepo()->newFile( $row->img_name );
				$thumb = $file ? $file->transform( [ 'width' => self::THUMBNAIL_WIDTH ] ) : null;
				$html = $thumb && !$thumb->isError() ? $thumb->toHtml() : '';
				// Blurred until a click reveals it (ext.nsfwoid.review): patrollers choose what they see.
				return $this->blur ? Html::rawElement( 'span', [ 'class' => 'nsfwoid-blurred' ], $html ) : $html;
			case 'img_name':
				return $this->getLinkRenderer()->makeKnownLink( Title::makeTitle( NS_FILE, $value ) );
			case 'nss_score':
				return htmlspecialchars( sprintf( '%.3f', $value ) );
			case 'actor_name':
				if ( ReviewQueue::isUploaderHidden( $row ) ) {
					return Html::element(
						'span', [ 'class' => 'history-deleted' ], $this->msg( 'rev-deleted-user' )->text()
					);
				}
				return $this->getLinkRenderer()->makeLink( Title::makeTitle( NS_USER, $value ), $value );
			case 'img_timestamp':
				return htmlspecialchars( $this->getLanguage()->userTimeAndDate( $value, $this->getUser() ) );
			case 'review':
				return $this->reviewCell( $row );
		}
		return htmlspecialchars( (string)$value );
	}

	/**
	 * Whether the row is reviewed and its verdict, then a form with a button for each verdict and,
	 * while it is not reviewed, one that marks it reviewed.
	 */
	private function reviewCell( stdClass $row ): string {
		$verdict = ReviewQueue::verdictOf( $row );
		$state = ( ReviewQueue::isReviewed( $row )
				? Html::element( 'span', [ 'class' => 'nsfwoid-reviewed' ], $this->msg( 'nsfwoid-review-done' )->text() )
				: '' ) .
			Html::element( 'span', [ 'class' => 'nsfwoid-verdict' ],
				$verdict === null ? '' : $this->msg( "nsfwoid-verdict-$verdict" )->text() );
		$buttons = '';
		foreach ( VerdictStore::VERDICTS as $value ) {
			$buttons .= Html::element( 'button', [ 'type' => 'submit', 'name' => 'reviewverdict', 'value' => $value ],
				$this->msg( "nsfwoid-verdict-$value" )->text() );
		}
		if ( !ReviewQueue::isReviewed( $row ) ) {
			$buttons .= Html::element( 'button', [ 'type' => 'submit', 'name' => 'reviewmark', 'value' => '1' ],
				$this->msg( 'nsfwoid-review-mark' )->text() );
		}
		return Html::rawElement( 'div', [ 'class' => 'nsfwoid-review-state' ], $state ) .
			Html::rawElement( 'form', [
				'method' => 'post', 'action' => $this->formAction, 'class' => 'nsfwoid-review-form',
			],
				Html::hidden( 'wpEditToken', $this->getCsrfTokenSet()->getToken() ) .
				Html::hidden( 'reviewtitle', Title::makeTitle( NS_FILE, $row->img_name )->getPrefixedText() ) .
				Html::hidden( 'reviewsha1', $row->img_sha1 ) .
				$buttons
			);
	}

	public function getDefaultSort() {
		return 'img_timestamp';
	}

	protected function isFieldSortable( $field ) {
		return $field === 'img_timestamp';
	}
}
