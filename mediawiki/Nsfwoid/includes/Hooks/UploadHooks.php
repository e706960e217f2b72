<?php

namespace MediaWiki\Extension\Nsfwoid\Hooks;

use Config;
use JobQueueGroup;
use MediaWiki\Extension\Nsfwoid\FileScorer;
use MediaWiki\Extension\Nsfwoid\Job\ScoreFileJob;
use MediaWiki\Extension\Nsfwoid\PendingUploads;
use MediaWiki\Hook\UploadCompleteHook;
use MediaWiki\Hook\UploadVerifyFileHook;

class UploadHooks implements UploadCompleteHook, UploadVerifyFileHook {

	private Config $config;
	private JobQueueGroup $jobQueueGroup;
	private PendingUploads $pendingUploads;
	private FileScorer $fileScorer;

	public function __construct(
		Config $config, JobQueueGroup $jobQueueGroup, PendingUploads $pendingUploads, FileScorer $fileScorer
	) {
		$this->config = $config;
		$this->jobQueueGroup = $jobQueueGroup;
		$this->pendingUploads = $pendingUploads;
		$this->fileScorer = $fileScorer;
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
	 * Scores the new file in a job: the upload request never waits for the service. The job is
	 * pushed once the upload's transaction has committed: pushed now, on MySQL or PostgreSQL (whose
	 * job queue writes at once on a connection of its own) or with a Kafka queue, a runner could
	 * take it before the file exists for anyone else, and drop it. Files that can be scored
	 * neither as they are nor by a thumbnail, such as audio, get no job.
	 *
	 * @inheritDoc
	 */
	public function onUploadComplete( $uploadBase ) {
		$file = $uploadBase->getLocalFile();
		if ( $this->config->get( 'NsfwoidScoreOnUpload' ) && $file && $this->fileScorer->canScore( $file ) ) {
			$this->jobQueueGroup->lazyPush( ScoreFileJob::newSpec( $file->getTitle() ) );
		}
	}
}
