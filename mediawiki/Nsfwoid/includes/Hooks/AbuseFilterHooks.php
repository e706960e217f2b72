<?php

namespace MediaWiki\Extension\Nsfwoid\Hooks;

// phpcs:disable MediaWiki.NamingConventions.LowerCamelFunctionsName.FunctionName

use Config;
use MediaWiki\Extension\AbuseFilter\Hooks\AbuseFilterBuilderHook;
use MediaWiki\Extension\AbuseFilter\Hooks\AbuseFilterComputeVariableHook;
use MediaWiki\Extension\AbuseFilter\Hooks\AbuseFilterGenerateTitleVarsHook;
use MediaWiki\Extension\AbuseFilter\Variables\VariableHolder;
use MediaWiki\Extension\Nsfwoid\AddedFiles;
use MediaWiki\Extension\Nsfwoid\EditedPages;
use MediaWiki\Extension\Nsfwoid\FileScorer;
use MediaWiki\Extension\Nsfwoid\PendingUploads;
use MediaWiki\Extension\Nsfwoid\ScoreLookup;
use RecentChange;
use Title;

/**
 * The AbuseFilter variables added_files_nsfw_score (edits) and file_nsfw_score (uploads).
 * They are lazy: a wiki whose filters do not use them pays nothing. This handler is only ever
 * called by AbuseFilter, so the extension works without it.
 */
class AbuseFilterHooks implements
	AbuseFilterBuilderHook,
	AbuseFilterGenerateTitleVarsHook,
	AbuseFilterComputeVariableHook
{
	private const ADDED_FILES = 'nsfwoid-added-files-score';
	private const UPLOADED_FILE = 'nsfwoid-uploaded-file-score';

	private Config $config;
	private AddedFiles $addedFiles;
	private ScoreLookup $scoreLookup;
	private PendingUploads $pendingUploads;
	private EditedPages $editedPages;

	public function __construct(
		Config $config,
		AddedFiles $addedFiles,
		ScoreLookup $scoreLookup,
		PendingUploads $pendingUploads,
		EditedPages $editedPages
	) {
		$this->config = $config;
		$this->addedFiles = $addedFiles;
		$this->scoreLookup = $scoreLookup;
		$this->pendingUploads = $pendingUploads;
		$this->editedPages = $editedPages;
	}

	/** @inheritDoc */
	public function onAbuseFilter_builder( array &$realValues ) {
		$realValues['vars']['added_files_nsfw_score'] = 'added-files-nsfw-score';
		$realValues['vars']['file_nsfw_score'] = 'file-nsfw-score';
	}

	/**
	 * Only for the action being filtered ($rc is null), not for past changes being examined.
	 *
	 * @inheritDoc
	 */
	public function onAbuseFilter_generateTitleVars( VariableHolder $vars, Title $title, string $prefix, ?RecentChange $rc ) {
		if ( $prefix === 'page' && $rc === null ) {
			$vars->setLazyLoadVar( 'added_files_nsfw_score', self::ADDED_FILES, [ 'title' => $title ] );
			$vars->setLazyLoadVar( 'file_nsfw_score', self::UPLOADED_FILE, [] );
		}
	}

	/** @inheritDoc */
	public function onAbuseFilter_computeVariable( string $method, VariableHolder $vars, array $parameters, ?string &$result ) {
		$timeout = (float)$this->config->get( 'NsfwoidEditTimeout' );
		if ( $method === self::ADDED_FILES ) {
			$result = null;
			if ( $vars->getComputedVariable( 'action' )->toString() === 'edit' ) {
				$files = $this->addedFiles->getAddedFiles(
					$parameters['title'], $vars->getComputedVariable( 'new_wikitext' )->toString(),
					...$this->editedPages->get( $parameters['title'] )
				);
				$result = $files ? $this->scoreLookup->highestScore( $files, $timeout ) : null;
			}
			return false;
		}
		if ( $method === self::UPLOADED_FILE ) {
			$result = null;
			if ( $vars->varIsSet( 'file_sha1' ) ) {
				$sha1 = FileScorer::base36( $vars->getComputedVariable( 'file_sha1' )->toString() );
				$result = $this->scoreLookup->uploadScore( $sha1, $this->pendingUploads->getAll(), $timeout );
			}
			return false;
		}
		return true;
	}
}
