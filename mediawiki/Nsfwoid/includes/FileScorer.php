<?php

namespace MediaWiki\Extension\Nsfwoid;

use File;
use MediaWiki\Config\ServiceOptions;
use Psr\Log\LoggerInterface;

/**
 * Scores one file and stores its score: the one path shared by the job, the maintenance
 * script and AbuseFilter's on-demand scoring.
 *
 * Only files the service can read are read or sent: one of its formats, no larger than
 * $wgNsfwoidMaxFileSize. Commons holds videos, PDFs and TIFFs of gigabytes; reading one into
 * an edit's memory would end the edit with a fatal error, and the service would refuse it.
 */
class FileScorer {

	public const CONSTRUCTOR_OPTIONS = [ 'NsfwoidMaxFileSize' ];

	/** The formats the service reads (nsfwoid/imaging.py FORMATS), as MediaWiki names them. */
	private const MIME_TYPES = [
		'image/jpeg', 'image/png', 'image/gif', 'image/webp', 'image/tiff',
		'image/bmp', 'image/x-bmp', 'image/x-ms-bmp',
	];

	private int $maxFileSize;
	private NsfwoidClient $client;
	private ScoreStore $store;
	private LoggerInterface $logger;

	public function __construct(
		ServiceOptions $options, NsfwoidClient $client, ScoreStore $store, LoggerInterface $logger
	) {
		$options->assertRequiredOptions( self::CONSTRUCTOR_OPTIONS );
		$this->maxFileSize = (int)$options->get( 'NsfwoidMaxFileSize' );
		$this->client = $client;
		$this->store = $store;
		$this->logger = $logger;
	}

	/**
	 * Whether the service can read the file: the callers that meet many files (the upload hook,
	 * edits, the backfill) pass over the others without a word.
	 */
	public function canScore( File $file ): bool {
		return $this->whyUnreadable( $file->getMimeType(), $file->getSize() ) === null;
	}

	/**
	 * Local files are sent as bytes: the service need not reach the wiki, and a fresh upload
	 * is scored before it appears on the file servers. Files of a foreign repository, such as
	 * Commons, are sent by URL.
	 *
	 * @throws ScoringException
	 */
	public function scoreFile( File $file, float $timeout ): ServiceScore {
		$this->assertReadable( $file->getMimeType(), $file->getSize(), $file->getName() );
		if ( $file->isLocal() ) {
			$path = $file->getLocalRefPath();
			$bytes = $path === false ? false : file_get_contents( $path );
			if ( $bytes === false ) {
				throw new ScoringException( 'The file could not be read', false );
			}
			$score = $this->client->scoreBytes( $bytes, $timeout );
		} else {
			$score = $this->client->scoreUrl( $file->getFullUrl(), $timeout );
		}
		return $this->storeIfSame( $score, $file->getSha1(), $file->getName() );
	}

	/**
	 * Scores the upload being verified whose bytes have this SHA-1, from its temporary file: it
	 * has no page yet. Only the temporary files the service can read are read and hashed.
	 *
	 * @param string $sha1 base 36
	 * @param array[] $uploads [ 'path' => string, 'mime' => string ], as MediaWiki detected it
	 * @param float $timeout seconds
	 * @throws ScoringException
	 */
	public function scoreUpload( string $sha1, array $uploads, float $timeout ): ServiceScore {
		$why = 'no upload being verified has these bytes';
		foreach ( $uploads as [ 'path' => $path, 'mime' => $mime ] ) {
			$unreadable = $this->whyUnreadable( $mime, filesize( $path ) );
			if ( $unreadable !== null ) {
				$why = $unreadable;
				continue;
			}
			$bytes = file_get_contents( $path );
			if ( $bytes !== false && \Wikimedia\base_convert( sha1( $bytes ), 16, 36, 31 ) === $sha1 ) {
				return $this->storeIfSame( $this->client->scoreBytes( $bytes, $timeout ), $sha1, $sha1 );
			}
		}
		throw new ScoringException( "$sha1 was not sent: $why", false );
	}

	/**
	 * @param string|null $mime
	 * @param int|false|null $size bytes, when known
	 * @return string|null why the service cannot read such a file, or null when it can
	 */
	private function whyUnreadable( ?string $mime, $size ): ?string {
		if ( !in_array( $mime, self::MIME_TYPES, true ) ) {
			return 'the service does not read ' . ( $mime ?: 'files of an unknown type' );
		}
		if ( is_int( $size ) && $size > $this->maxFileSize ) {
			return "$size bytes is over \$wgNsfwoidMaxFileSize ({$this->maxFileSize})";
		}
		return null;
	}

	/**
	 * @param string|null $mime
	 * @param int|false|null $size bytes, when known
	 * @param string $name for the message
	 * @throws ScoringException
	 */
	private function assertReadable( ?string $mime, $size, string $name ): void {
		$why = $this->whyUnreadable( $mime, $size );
		if ( $why !== null ) {
			throw new ScoringException( "$name was not sent: $why", false );
		}
	}

	/**
	 * Stores the score under the SHA-1 the service reports, after checking that it is the
	 * file's: a score of other bytes would be wrong under this key.
	 */
	private function storeIfSame( ServiceScore $score, string $expectedSha1, string $name ): ServiceScore {
		if ( $score->sha1 !== $expectedSha1 ) {
			$this->logger->warning(
				'nsfwoid scored other bytes than {name}: SHA-1 {got}, expected {expected}; nothing stored',
				[ 'name' => $name, 'got' => $score->sha1, 'expected' => $expectedSha1 ]
			);
			throw new ScoringException( "The service scored other bytes than $name", false );
		}
		$this->store->save( $score );
		return $score;
	}
}
