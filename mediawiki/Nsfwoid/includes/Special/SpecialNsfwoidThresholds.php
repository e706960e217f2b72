<?php

namespace MediaWiki\Extension\Nsfwoid\Special;

use Html;
use HTMLForm;
use MediaWiki\Extension\Nsfwoid\ScoreStore;
use MediaWiki\Extension\Nsfwoid\ThresholdCurve;
use MediaWiki\Extension\Nsfwoid\VerdictStore;
use SpecialPage;

/**
 * Special:NsfwoidThresholds: what a threshold means on this wiki, from its reviewers' verdicts on
 * the current model's scores: the precision–recall curve as a picture with the chosen threshold
 * marked, the figures at that threshold, and the suggested thresholds, as meta=nsfwthresholds
 * gives them. Needs the right `nsfwoid-review`, as the verdicts do.
 */
class SpecialNsfwoidThresholds extends SpecialPage {

	private const AIMS = [ 0.8, 0.9, 0.95 ];
	private const WIDTH = 480;
	private const HEIGHT = 360;
	private const MARGIN = 48;

	private ScoreStore $scoreStore;
	private VerdictStore $verdicts;

	public function __construct( ScoreStore $scoreStore, VerdictStore $verdicts ) {
		parent::__construct( 'NsfwoidThresholds', 'nsfwoid-review' );
		$this->scoreStore = $scoreStore;
		$this->verdicts = $verdicts;
	}

	public function execute( $subPage ) {
		$this->setHeaders();
		$this->checkPermissions();
		$this->addHelpLink( 'Extension:Nsfwoid' );
		$output = $this->getOutput();
		$output->addModuleStyles( 'ext.nsfwoid.review.styles' );
		$output->addWikiMsg( 'nsfwoid-thresholds-intro' );
		$requested = $this->getRequest()->getVal( 'threshold', '0.8' );
		$step = ThresholdCurve::stepOf( $requested );
		HTMLForm::factory( 'ooui', [
			'threshold' => [
				'type' => 'text', 'name' => 'threshold', 'default' => $requested,
				'label-message' => 'nsfwoid-thresholds-threshold',
				'help-message' => 'nsfwoid-thresholds-threshold-help',
			],
		], $this->getContext() )
			->setMethod( 'get' )
			->setTitle( $this->getPageTitle() )
			->setSubmitTextMsg( 'nsfwoid-review-submit' )
			->prepareForm()
			->displayForm( false );
		if ( $step === null ) {
			$output->addHTML( Html::errorBox( $this->msg( 'nsfwoid-thresholds-bad', $requested )->parse() ) );
			return;
		}

		$model = $this->scoreStore->getNewestModelId();
		$curve = $model === null ? ThresholdCurve::fromVerdicts( [] ) : $this->verdicts->getCurve( $model );
		if ( !$this->verdicts->isEnough( $curve ) ) {
			$output->addWikiMsg( 'nsfwoid-thresholds-notenough', $curve->totalExplicit(),
				$curve->total() - $curve->totalExplicit(), $this->verdicts->getMinVerdicts() );
			return;
		}
		$uploads = $this->verdicts->getRecentUploads( $model );
		$chosen = $this->verdicts->describe( $curve, $uploads, $step );
		$output->addWikiMsg( 'nsfwoid-thresholds-verdicts', $curve->totalExplicit(),
			$curve->total() - $curve->totalExplicit() );
		$output->addHTML( $this->plot( $curve->points(), $chosen ) );

		$rows = [ $this->row( $this->msg( 'nsfwoid-thresholds-chosen' )->text(), $chosen ) ];
		foreach ( $this->verdicts->suggest( $curve, $uploads, 'minprecision', self::AIMS ) as $suggested ) {
			$aim = $this->msg( 'nsfwoid-thresholds-aim-precision', $suggested['minprecision'] )->text();
			$rows[] = $this->row( $aim, $suggested );
		}
		foreach ( $this->verdicts->suggest( $curve, $uploads, 'minrecall', self::AIMS ) as $suggested ) {
			$aim = $this->msg( 'nsfwoid-thresholds-aim-recall', $suggested['minrecall'] )->text();
			$rows[] = $this->row( $aim, $suggested );
		}
		$header = '';
		foreach ( [ 'aim', 'threshold', 'precision', 'recall', 'uploads' ] as $column ) {
			$header .= Html::element( 'th', [], $this->msg( "nsfwoid-thresholds-column-$column" )->text() );
		}
		$output->addHTML( Html::rawElement( 'table', [ 'class' => 'wikitable nsfwoid-thresholds' ],
			Html::rawElement( 'tr', [], $header ) . implode( '', $rows ) ) );
	}

	/**
	 * @param string $aim
	 * @param array $figures VerdictStore::describe()'s, or only a null threshold
	 */
	private function row( string $aim, array $figures ): string {
		$cells = [ $aim ];
		if ( $figures['threshold'] === null ) {
			$cells[] = $this->msg( 'nsfwoid-thresholds-none' )->text();
			$cells = array_pad( $cells, 5, '' );
		} else {
			$cells[] = sprintf( '%.3f', $figures['threshold'] );
			$cells[] = $this->proportion( $figures['precision'] );
			$cells[] = $this->proportion( $figures['recall'] );
			$share = $figures['uploads']['share'];
			$cells[] = $share === null ? '' : $this->msg( 'nsfwoid-thresholds-share',
				sprintf( '%.1f', 100 * $share ), $figures['uploads']['of'] )->text();
		}
		return Html::rawElement( 'tr', [], implode( '', array_map(
			static fn ( string $cell ) => Html::element( 'td', [], $cell ), $cells
		) ) );
	}

	private function proportion( ?array $figure ): string {
		if ( $figure === null ) {
			return '';
		}
		return $this->msg( 'nsfwoid-thresholds-proportion', sprintf( '%.3f', $figure['value'] ),
			sprintf( '%.3f', $figure['low'] ), sprintf( '%.3f', $figure['high'] ), $figure['n'] )->text();
	}

	/**
	 * The curve as an SVG picture: recall across, precision up, the chosen threshold marked.
	 *
	 * @param float[][] $points ThresholdCurve::points()
	 * @param array $chosen VerdictStore::describe()'s
	 */
	private function plot( array $points, array $chosen ): string {
		$inner = [ self::WIDTH - 2 * self::MARGIN, self::HEIGHT - 2 * self::MARGIN ];
		$x = static fn ( float $recall ) => sprintf( '%.1f', self::MARGIN + $recall * $inner[0] );
		$y = static fn ( float $precision ) => sprintf( '%.1f', self::HEIGHT - self::MARGIN - $precision * $inner[1] );
		$svg = Html::element( 'rect', [ 'x' => self::MARGIN, 'y' => self::MARGIN, 'width' => $inner[0],
			'height' => $inner[1], 'class' => 'nsfwoid-curve-frame' ] );
		foreach ( [ 0, 0.5, 1 ] as $tick ) {
			$svg .= Html::element( 'text', [ 'x' => $x( $tick ), 'y' => self::HEIGHT - self::MARGIN + 18,
				'text-anchor' => 'middle' ], (string)$tick );
			$svg .= Html::element( 'text', [ 'x' => self::MARGIN - 8, 'y' => $y( $tick ) + 4,
				'text-anchor' => 'end' ], (string)$tick );
		}
		$svg .= Html::element( 'text', [ 'x' => self::WIDTH / 2, 'y' => self::HEIGHT - 8, 'text-anchor' => 'middle' ],
			$this->msg( 'nsfwoid-thresholds-column-recall' )->text() );
		$svg .= Html::element( 'text', [ 'x' => 14, 'y' => self::HEIGHT / 2, 'text-anchor' => 'middle',
			'transform' => sprintf( 'rotate(-90 14 %d)', self::HEIGHT / 2 ) ],
			$this->msg( 'nsfwoid-thresholds-column-precision' )->text() );
		$svg .= Html::element( 'polyline', [ 'class' => 'nsfwoid-curve-line', 'points' => implode( ' ', array_map(
			static fn ( array $point ) => $x( $point[2] ) . ',' . $y( $point[1] ), $points
		) ) ] );
		if ( $chosen['precision'] !== null && $chosen['recall'] !== null ) {
			$cx = $x( $chosen['recall']['value'] );
			$cy = $y( $chosen['precision']['value'] );
			$svg .= Html::element( 'circle', [ 'cx' => $cx, 'cy' => $cy, 'r' => 5, 'class' => 'nsfwoid-curve-mark' ] );
			$svg .= Html::element( 'text', [ 'x' => $cx + 8, 'y' => $cy - 8 ],
				sprintf( '%.3f', $chosen['threshold'] ) );
		}
		return Html::rawElement( 'svg', [
			'xmlns' => 'http://www.w3.org/2000/svg', 'class' => 'nsfwoid-curve', 'role' => 'img',
			'viewBox' => '0 0 ' . self::WIDTH . ' ' . self::HEIGHT, 'width' => self::WIDTH, 'height' => self::HEIGHT,
			'aria-label' => $this->msg( 'nsfwoid-thresholds-plot', sprintf( '%.3f', $chosen['threshold'] ) )->text(),
		], $svg );
	}

	protected function getGroupName() {
		return 'media';
	}
}
