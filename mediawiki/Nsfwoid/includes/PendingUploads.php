<?php

namespace MediaWiki\Extension\Nsfwoid;

/**
 * Temporary files of the uploads being verified in this request, by base-36 SHA-1.
 *
 * AbuseFilter checks an upload before it completes, and gives its filters only the file's
 * SHA-1 (file_sha1), not its path. The UploadVerifyFile hook, which runs first, records the path
 * here so that file_nsfw_score can send the bytes.
 */
class PendingUploads {

	/** @var string[] path by base-36 SHA-1 */
	private array $paths = [];

	public function add( string $sha1, string $path ): void {
		$this->paths[$sha1] = $path;
	}

	public function getPath( string $sha1 ): ?string {
		return $this->paths[$sha1] ?? null;
	}
}
