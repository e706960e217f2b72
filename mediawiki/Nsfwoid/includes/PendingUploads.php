<?php

namespace MediaWiki\Extension\Nsfwoid;

/**
 * Temporary files of the uploads being verified in this request, with their detected MIME types.
 *
 * AbuseFilter checks an upload before it completes, and gives its filters only the file's
 * SHA-1 (file_sha1), not its path. The UploadVerifyFile hook, which runs first, records the path
 * here so that file_nsfw_score can send the bytes. It does not hash the file: every upload would
 * pay for a pass over its bytes (seconds, for a video of gigabytes) that only a filter reading
 * file_nsfw_score needs, and FileScorer hashes only the files the service can read.
 */
class PendingUploads {

	/** @var array[] [ 'path' => string, 'mime' => string ] */
	private array $uploads = [];

	public function add( string $path, string $mime ): void {
		$this->uploads[$path] = [ 'path' => $path, 'mime' => $mime ];
	}

	/**
	 * @return array[] [ 'path' => string, 'mime' => string ]
	 */
	public function getAll(): array {
		return array_values( $this->uploads );
	}
}
