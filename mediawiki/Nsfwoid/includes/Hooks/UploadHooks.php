<?php

namespace MediaWiki\Extension\Nsfwoid\Hooks;

use Config;
use JobQueueGroup;
use MediaWiki\Extension\Nsfwoid\FileScorer;
use MediaWiki\Extension\Nsfwoid\Job\ScoreFileJob;
use MediaWiki\Extension\Nsfwoid\PendingUploads;
use MediaWiki\Extension\Nsfwoid\ScoreStore;
use MediaWiki\Hook\FileUploadHook;
use MediaWiki\Hook\UploadVerifyFileHook;

class UploadHooks implements FileUploadHook, UploadVerifyFileHook {

	private Config $config;
	private JobQueueGroup $jobQueueGroup;
	private PendingUploads $pendingUploads;
	private FileScorer $fileScorer;
	private ScoreStore $scoreStore;

	public function __construct(
		Config $config, JobQueueGroup $jobQueueGroup, PendingUploads $pendingUploads, FileScorer $fileScorer,
		ScoreStore $scoreStore
	) {
		$this->config = $config;
		$this->jobQueueGroup = $jobQueueGroup;
		$this->pendingUploads = $pendingUploads;
		$this->fileScorer = $fileScorer;
		$this->scoreStore = $scoreStore;
	}

	/**
	 * Remembers the temporary file and its type, which AbuseFilter's file_nsfw_score may need
	 * later in this request.
	 *
	 * @inheritDoc
	 */
	public function onUploadVerifyFile( $upload, $mime, &$error ) {
		$path = $upload->getTempPath();
		if ( $path ) {
			$this->pendingUploads->add( $path, $mime );
		}
	}

	/**
	 * Scores each new version of a local file in a job of its own, whichever way it came: the
	 * Action API, Special:Upload, the upload stash, upload by URL, importImages.php, or a revert to
	 * an older version. LocalFile::recordUpload3() runs this hook for each of them, where
	 * UploadComplete runs only for uploads through UploadBase.
	 *
	 * The upload never waits for the service: the job is pushed once the upload's transaction has
	 * committed (pushed now, on MySQL or PostgreSQL, whose job queue writes at once on a connection
	 * of its own, or with a Kafka queue, a runner could take it before the file exists for anyone
	 * else, and drop it). Content that already has a score of the model the wiki's newest scores
	 * come from, such as a revert to a scored version, gets no job; the job checks again against
	 * the service's current model. Files that can be scored neither as they are nor by a
	 * thumbnail, such as audio, get no job.
	 *
	 * @inheritDoc
	 */
	public function onFileUpload( $file, $reupload, $hasDescription ) {
		if ( !$this->config->get( 'NsfwoidScoreOnUpload' ) || !$file->isLocal()
			|| !$this->fileScorer->canScore( $file )
		) {
			return;
		}
		$sha1 = $file->getSha1();
		$model = $this->scoreStore->getNewestModel();
		if ( $model !== null && $this->scoreStore->getScores( [ $sha1 ], $model ) ) {
			return;
		}
		$this->jobQueueGroup->lazyPush( ScoreFileJob::newSpec( $file->getTitle(), $sha1, $file->getTimestamp() ) );
	}
}
