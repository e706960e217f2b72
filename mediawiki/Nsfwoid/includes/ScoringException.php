<?php

namespace MediaWiki\Extension\Nsfwoid;

use RuntimeException;

/**
 * A file could not be scored. Retryable: the service was unreachable, slow, or failed (5xx), so
 * a later try may succeed. Not retryable: the service refused the image (4xx, such as a format it
 * does not read), or scored bytes other than the file's, or the file is one the service cannot
 * read, which was not sent. Timed out: the service took the whole
 * time allowed without answering, which is what makes a hung service costly to its callers.
 * A failed call to the service has a kind, one of Metrics::FAILURE_KINDS.
 */
class ScoringException extends RuntimeException {

	private bool $retryable;
	private ?string $failureKind;

	public function __construct( string $message, bool $retryable, ?string $failureKind = null ) {
		parent::__construct( $message );
		$this->retryable = $retryable;
		$this->failureKind = $failureKind;
	}

	public function isRetryable(): bool {
		return $this->retryable;
	}

	public function isTimedOut(): bool {
		return $this->failureKind === 'timeout';
	}

	/**
	 * @return string|null how the call to the service failed; null when no call failed
	 */
	public function getFailureKind(): ?string {
		return $this->failureKind;
	}
}
