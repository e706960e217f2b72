<?php

namespace MediaWiki\Extension\Nsfwoid;

/**
 * Temporary files of the uploads being verified in this request, by base-36 SHA-1.
 *
 * AbuseFilter checks an upload before it completes, and gives its filters only the file's
 * SHA-1 (file_sha1), not its path. The UploadVerifyFile hook, which runs first, records the path
 * and the detected MIME type here so that file_nsfw_score can send the bytes.
 */
class PendingUploads {

	/** @var array[] [ 'path' => string, 'mime' => string ] by base-36 SHA-1 */
	private array $uploads = [];

	public function add( string $sha1, string $path, string $mime ): void {
		$this->uploads[$sha1] = [ 'path' => $path, 'mime' => $mime ];
	}

	/**
	 * @return array|null [ 'path' => string, 'mime' => string ]
	 */
	public function get( string $sha1 ): ?array {
		return $this->uploads[$sha1] ?? null;
	}
}
