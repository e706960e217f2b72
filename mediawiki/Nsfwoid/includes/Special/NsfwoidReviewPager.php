<?php

namespace MediaWiki\Extension\Nsfwoid\Special;

use Html;
use IContextSource;
use MediaWiki\Extension\Nsfwoid\ReviewQueue;
use MediaWiki\Linker\LinkRenderer;
use RepoGroup;
use TablePager;
use Title;

/**
 * The rows of Special:NsfwoidReview: local files whose current version has a score of the model
 * of the newest stored score at or above a threshold, most recent upload first.
 */
class NsfwoidReviewPager extends TablePager {

	private const THUMBNAIL_WIDTH = 120;

	private RepoGroup $repoGroup;
	/** @var int nsfwoid_model.nsm_id */
	private int $model;
	private float $minScore;
	private ?string $since;
	private bool $blur;

	public function __construct(
		IContextSource $context, LinkRenderer $linkRenderer, RepoGroup $repoGroup,
		int $model, float $minScore, ?string $since, bool $blur
	) {
		// Before the parent's constructor, which reads the sort.
		$this->mDefaultDirection = true;
		parent::__construct( $context, $linkRenderer );
		$this->repoGroup = $repoGroup;
		$this->model = $model;
		$this->minScore = $minScore;
		$this->since = $since;
		$this->blur = $blur;
	}

	public function getQueryInfo() {
		$db = $this->getDatabase();
		$queue = ReviewQueue::queryInfo( $db, $this->getAuthority(), $this->model, $this->minScore );
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
		}
		return htmlspecialchars( (string)$value );
	}

	public function getDefaultSort() {
		return 'img_timestamp';
	}

	protected function isFieldSortable( $field ) {
		return $field === 'img_timestamp';
	}
}
