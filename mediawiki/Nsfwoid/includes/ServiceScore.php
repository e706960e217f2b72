<?php

namespace MediaWiki\Extension\Nsfwoid;

/**
 * One answer of the service: the score, the SHA-1 of the bytes it scored (base 36, as
 * img_sha1) and the sha256 of the model that scored them.
 */
class ServiceScore {

	public float $score;
	public string $sha1;
	public string $model;

	public function __construct( float $score, string $sha1, string $model ) {
		$this->score = $score;
		$this->sha1 = $sha1;
		$this->model = $model;
	}

	/**
	 * @param mixed $json the decoded JSON answer of POST /v1/score
	 * @return self
	 * @throws ScoringException when the answer is not a score
	 */
	public static function newFromJson( $json ): self {
		$score = $json['score'] ?? null;
		$sha1 = $json['sha1_base36'] ?? null;
		$model = $json['model']['sha256'] ?? null;
		if ( !is_numeric( $score ) || $score < 0 || $score > 1 || !is_string( $sha1 ) || !is_string( $model ) ) {
			throw new ScoringException( 'The service answered without a score', true );
		}
		return new self( (float)$score, $sha1, $model );
	}
}
