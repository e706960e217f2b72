<?php

namespace MediaWiki\Extension\Nsfwoid;

/**
 * One answer of the service: the score, the SHA-1 of the bytes it scored (base 36, as
 * img_sha1), and the sha256 and, where known, the name of the model that scored them.
 */
class ServiceScore {

	public float $score;
	public string $sha1;
	public string $model;
	public ?string $modelName;

	public function __construct( float $score, string $sha1, string $model, ?string $modelName = null ) {
		$this->score = $score;
		$this->sha1 = $sha1;
		$this->model = $model;
		$this->modelName = $modelName;
	}

	/**
	 * @param mixed $json the decoded JSON answer of POST /v1/score
	 * @return self
	 * @throws ScoringException when the answer is not a score
	 */
	public static function newFromJson( $json ): self {
		$score = self::newIfValid(
			$json['score'] ?? null, $json['sha1_base36'] ?? null, $json['model']['sha256'] ?? null
		);
		if ( $score === null ) {
			throw new ScoringException( 'The service answered without a score', true );
		}
		$name = $json['model']['name'] ?? null;
		return new self( $score->score, $score->sha1, $score->model, is_string( $name ) ? $name : null );
	}

	/**
	 * @param mixed $row a stored score as prop=nsfwscore gives it: score, sha1, model
	 * @return self|null null when it is not a score
	 */
	public static function newFromApiRow( $row ): ?self {
		if ( !is_array( $row ) ) {
			return null;
		}
		return self::newIfValid( $row['score'] ?? null, $row['sha1'] ?? null, $row['model'] ?? null );
	}

	/**
	 * @param mixed $score
	 * @param mixed $sha1
	 * @param mixed $model
	 * @return self|null
	 */
	private static function newIfValid( $score, $sha1, $model ): ?self {
		if ( !is_numeric( $score ) || $score < 0 || $score > 1 || !is_string( $sha1 ) || !is_string( $model ) ) {
			return null;
		}
		return new self( (float)$score, $sha1, $model );
	}
}
