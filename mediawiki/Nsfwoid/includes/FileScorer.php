<?php

namespace MediaWiki\Extension\Nsfwoid;

use File;
use MediaWiki\Config\ServiceOptions;
use Psr\Log\LoggerInterface;

/**
 * Scores one file and stores its score: the one path shared by the job, the maintenance
 * script and AbuseFilter's on-demand scoring.
 *
 * Only files the service can read are read or sent as they are: one of its formats, no larger
 * than $wgNsfwoidMaxFileSize. Commons holds videos, PDFs and TIFFs of gigabytes; reading one
 * into an edit's memory would end the edit with a fatal error, and the service would refuse it.
 * For another local file that MediaWiki can render (an SVG, a PDF, a video, an image over the
 * limit), a thumbnail $wgNsfwoidThumbnailWidth wide is scored in its place, and its score stored
 * under the file's SHA-1: the model sees 256 px anyway. Thumbnails are rendered only where there
 * is time, in jobs and the backfill, never while an edit or upload waits.
 */
class FileScorer {

	public const CONSTRUCTOR_OPTIONS = [ 'NsfwoidMaxFileSize', 'NsfwoidThumbnailWidth' ];

	/** The formats the service reads (nsfwoid/scoring/imaging.py FORMATS), as MediaWiki names them. */
	private const MIME_TYPES = [
		'image/jpeg', 'image/png', 'image/gif', 'image/webp', 'image/tiff',
		'image/bmp', 'image/x-bmp', 'image/x-ms-bmp',
	];

	private int $maxFileSize;
	private int $thumbnailWidth;
	private NsfwoidClient $client;
	private ScoreStore $store;
	private LoggerInterface $logger;

	public function __construct(
		ServiceOptions $options, NsfwoidClient $client, ScoreStore $store, LoggerInterface $logger
	) {
		$options->assertRequiredOptions( self::CONSTRUCTOR_OPTIONS );
		$this->maxFileSize = (int)$options->get( 'NsfwoidMaxFileSize' );
		$this->thumbnailWidth = (int)$options->get( 'NsfwoidThumbnailWidth' );
		$this->client = $client;
		$this->store = $store;
		$this->logger = $logger;
	}

	/**
	 * Whether the file can be scored: the callers that meet many files (the upload hook, edits,
	 * the backfill) pass over the others without a word.
	 *
	 * @param File $file
	 * @param bool $mayRender whether a thumbnail may be rendered for it now
	 */
	public function canScore( File $file, bool $mayRender = true ): bool {
		return $this->whyUnreadable( $file->getMimeType(), $file->getSize() ) === null
			|| ( $mayRender && $this->hasThumbnail( $file ) );
	}

	/**
	 * Local files are sent as bytes: the service need not reach the wiki, and a fresh upload
	 * is scored before it appears on the file servers. Files of a foreign repository, such as
	 * Commons, are sent by URL.
	 *
	 * @param File $file
	 * @param float $timeout seconds
	 * @param bool $mayRender whether a thumbnail may be rendered now, for a file the service
	 *   cannot read as it is; rendering can take longer than an edit may wait
	 * @throws ScoringException
	 */
	public function scoreFile( File $file, float $timeout, bool $mayRender = true ): ServiceScore {
		$why = $this->whyUnreadable( $file->getMimeType(), $file->getSize() );
		if ( $why !== null ) {
			if ( $mayRender && $this->hasThumbnail( $file ) ) {
				return $this->scoreThumbnail( $file, $timeout );
			}
			throw new ScoringException( $file->getName() . " was not sent: $why", false );
		}
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
			if ( $bytes !== false && self::base36( sha1( $bytes ) ) === $sha1 ) {
				return $this->storeIfSame( $this->client->scoreBytes( $bytes, $timeout ), $sha1, $sha1 );
			}
		}
		throw new ScoringException( "$sha1 was not sent: $why", false );
	}

	/**
	 * Local files only: a foreign repository renders its thumbnails on its own servers.
	 */
	private function hasThumbnail( File $file ): bool {
		return $this->thumbnailWidth > 0 && $file->isLocal() && $file->canRender();
	}

	/**
	 * @throws ScoringException
	 */
	private function scoreThumbnail( File $file, float $timeout ): ServiceScore {
		$name = $file->getName();
		$width = $this->thumbnailWidth;
		if ( !$file->mustRender() && $file->getWidth() <= $width ) {
			// MediaWiki answers a bitmap no wider than the thumbnail asked for with the file itself,
			// which is over the limit: one pixel narrower, it is rendered, and its padding left out.
			$width = $file->getWidth() - 1;
		}
		$thumbnail = $width > 0 ? $file->transform( [ 'width' => $width ], File::RENDER_NOW ) : false;
		if ( !$thumbnail || $thumbnail->isError() || !$thumbnail->getStoragePath() ) {
			$why = $thumbnail && $thumbnail->isError() ? ': ' . $thumbnail->toText() : '';
			throw new ScoringException( "MediaWiki could not render a thumbnail of $name$why", false );
		}
		// Sized before it is read: a thumbnail is not bounded in bytes.
		$backend = $file->getRepo()->getBackend();
		$size = $backend->getFileSize( [ 'src' => $thumbnail->getStoragePath() ] );
		if ( !is_int( $size ) || $size > $this->maxFileSize ) {
			throw new ScoringException( "The thumbnail of $name is missing or over \$wgNsfwoidMaxFileSize", false );
		}
		$bytes = $backend->getFileContents( [ 'src' => $thumbnail->getStoragePath() ] );
		if ( !is_string( $bytes ) ) {
			throw new ScoringException( "The thumbnail of $name could not be read", false );
		}
		return $this->storeIfSame(
			$this->client->scoreBytes( $bytes, $timeout ), self::base36( sha1( $bytes ) ), "the thumbnail of $name",
			$file->getSha1()
		);
	}

	/**
	 * MediaWiki's img_sha1 form of a hex SHA-1: base 36, zero-padded to 31 digits.
	 *
	 * @param string $hex
	 * @return string
	 */
	public static function base36( string $hex ): string {
		return \Wikimedia\base_convert( $hex, 16, 36, 31 );
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
	 * Stores the score after checking that the service scored the bytes that were sent: a score
	 * of other bytes would be wrong under the file's SHA-1. A thumbnail's score is stored under
	 * its file's SHA-1, $fileSha1.
	 *
	 * @throws ScoringException
	 */
	private function storeIfSame(
		ServiceScore $score, string $sentSha1, string $name, ?string $fileSha1 = null
	): ServiceScore {
		if ( $score->sha1 !== $sentSha1 ) {
			$this->logger->warning(
				'nsfwoid scored other bytes than {name}: SHA-1 {got}, expected {expected}; nothing stored',
				[ 'name' => $name, 'got' => $score->sha1, 'expected' => $sentSha1 ]
			);
			throw new ScoringException( "The service scored other bytes than $name", false );
		}
		$stored = $fileSha1 === null
			? $score
			: new ServiceScore( $score->score, $fileSha1, $score->model, $score->modelName );
		$this->store->save( $stored );
		return $stored;
	}
}
