<?php

namespace MediaWiki\Extension\Nsfwoid;

/**
 * One answer of the service: the score, the SHA-1 of the bytes it scored (base 36, as
 * img_sha1), and the id and, where known, the name of the model that scored them. A model's id is
 * its weights' sha256 when it runs in fp32; a score of another precision (bf16) is another model,
 * with an id of its own, and a name that says its precision.
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
		$model = $json['model'] ?? null;
		$score = self::newIfValid(
			$json['score'] ?? null, $json['sha1_base36'] ?? null, is_array( $model ) ? self::modelId( $model ) : null
		);
		if ( $score === null ) {
			throw new ScoringException( 'The service answered without a score', true );
		}
		return new self( $score->score, $score->sha1, $score->model, self::modelName( $model ) );
	}

	/**
	 * @param array $model the service's `model`: name, sha256, and (newer services) precision and id
	 * @return string|null its id; the sha256 of a service that names no id (it runs fp32)
	 */
	public static function modelId( array $model ): ?string {
		$id = $model['id'] ?? $model['sha256'] ?? null;
		return is_string( $id ) ? $id : null;
	}

	/**
	 * @param array $model
	 * @return string|null its name, with its precision when that is not fp32: "open_nsfw bf16"
	 */
	private static function modelName( array $model ): ?string {
		$name = $model['name'] ?? null;
		if ( !is_string( $name ) ) {
			return null;
		}
		$precision = $model['precision'] ?? 'fp32';
		return is_string( $precision ) && $precision !== 'fp32' ? "$name $precision" : $name;
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
