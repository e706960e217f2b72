<?php

namespace MediaWiki\Extension\Nsfwoid;

use RuntimeException;

/**
 * A file could not be scored. Retryable: the service was unreachable, slow, or failed (5xx), so
 * a later try may succeed. Not retryable: the service refused the image (4xx, such as a format it
 * does not read), or scored bytes other than the file's.
 */
class ScoringException extends RuntimeException {

	private bool $retryable;

	public function __construct( string $message, bool $retryable ) {
		parent::__construct( $message );
		$this->retryable = $retryable;
	}

	public function isRetryable(): bool {
		return $this->retryable;
	}
}
