<?php

namespace MediaWiki\Extension\Nsfwoid\Api;

use ApiQuery;
use ApiQueryBase;
use MediaWiki\Extension\Nsfwoid\ScoreStore;
use MediaWiki\Extension\Nsfwoid\ThresholdCurve;
use MediaWiki\Extension\Nsfwoid\VerdictStore;
use Wikimedia\ParamValidator\ParamValidator;

/**
 * meta=nsfwthresholds: the precision and recall of the current model's scores on this wiki, from
 * its reviewers' verdicts (ThresholdCurve), in the manner of ORES's threshold statistics: at
 * given thresholds, and the thresholds that answer "the highest recall at a precision of at least
 * p" and "the highest precision at a recall of at least r". Each figure has the number of
 * verdicts behind it and a 95 % Wilson interval; each threshold, the share of the latest uploads
 * it flags. With fewer verdicts than $wgNsfwoidMinVerdicts, or none of one kind, it gives no
 * figure and says so (`enough`: false). The current model is that of the newest stored score.
 * Needs the right `nsfwoid-review`, as the verdicts do.
 */
class ApiQueryNsfwThresholds extends ApiQueryBase {

	private ScoreStore $scoreStore;
	private VerdictStore $verdicts;

	public function __construct( ApiQuery $query, string $moduleName, ScoreStore $scoreStore, VerdictStore $verdicts ) {
		parent::__construct( $query, $moduleName, 'nt' );
		$this->scoreStore = $scoreStore;
		$this->verdicts = $verdicts;
	}

	public function execute() {
		$this->checkUserRightsAny( 'nsfwoid-review' );
		$params = $this->extractRequestParams();
		$steps = array_map( fn ( string $value ) => $this->step( $value, 'thresholds' ), $params['thresholds'] );
		$minPrecisions = array_map( fn ( string $value ) => $this->fraction( $value, 'minprecision' ),
			$params['minprecision'] );
		$minRecalls = array_map( fn ( string $value ) => $this->fraction( $value, 'minrecall' ), $params['minrecall'] );

		$model = $this->scoreStore->getNewestModelId();
		$answer = [ 'model' => $this->scoreStore->getNewestModel(), 'minimum' => $this->verdicts->getMinVerdicts() ];
		$curve = $model === null ? ThresholdCurve::fromVerdicts( [] ) : $this->verdicts->getCurve( $model );
		$answer['verdicts'] = [
			'total' => $curve->total(),
			'explicit' => $curve->totalExplicit(),
			'notexplicit' => $curve->total() - $curve->totalExplicit(),
		];
		$answer['enough'] = $this->verdicts->isEnough( $curve );
		if ( $answer['enough'] ) {
			$uploads = $this->verdicts->getRecentUploads( $model );
			$answer['thresholds'] = array_map(
				fn ( int $step ) => $this->verdicts->describe( $curve, $uploads, $step ), $steps
			);
			$answer['maximumrecall'] = $this->verdicts->suggest( $curve, $uploads, 'minprecision', $minPrecisions );
			$answer['maximumprecision'] = $this->verdicts->suggest( $curve, $uploads, 'minrecall', $minRecalls );
			if ( $params['curve'] ) {
				$answer['curve'] = $curve->points();
			}
		}
		$this->getResult()->addValue( 'query', $this->getModuleName(), $answer );
	}

	private function step( string $value, string $name ): int {
		$step = ThresholdCurve::stepOf( $value );
		if ( $step === null ) {
			$this->dieWithError( [ 'apierror-nsfwoid-threshold', $this->encodeParamName( $name ) ], "bad$name" );
		}
		return $step;
	}

	private function fraction( string $value, string $name ): float {
		if ( !is_numeric( $value ) || (float)$value < 0 || (float)$value > 1 ) {
			$this->dieWithError( [ 'apierror-nsfwoid-minscore', $this->encodeParamName( $name ) ], "bad$name" );
		}
		return (float)$value;
	}

	public function getCacheMode( $params ) {
		return 'private';
	}

	public function getAllowedParams() {
		return [
			// Numbers from 0 to 1; MediaWiki 1.39's API has no float type.
			'thresholds' => [
				ParamValidator::PARAM_TYPE => 'string',
				ParamValidator::PARAM_ISMULTI => true,
				ParamValidator::PARAM_DEFAULT => '0.5|0.8|0.9',
			],
			'minprecision' => [
				ParamValidator::PARAM_TYPE => 'string',
				ParamValidator::PARAM_ISMULTI => true,
				ParamValidator::PARAM_DEFAULT => '0.8|0.9|0.95',
			],
			'minrecall' => [
				ParamValidator::PARAM_TYPE => 'string',
				ParamValidator::PARAM_ISMULTI => true,
				ParamValidator::PARAM_DEFAULT => '0.8|0.9|0.95',
			],
			'curve' => [ ParamValidator::PARAM_TYPE => 'boolean' ],
		];
	}

	protected function getExamplesMessages() {
		return [
			'action=query&meta=nsfwthresholds&ntthresholds=0.8&ntminprecision=0.9'
				=> 'apihelp-query+nsfwthresholds-example-simple',
		];
	}
}
