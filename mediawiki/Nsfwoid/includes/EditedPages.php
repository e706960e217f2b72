<?php

namespace MediaWiki\Extension\Nsfwoid;

use MediaWiki\User\UserIdentity;
use Title;
use WikiPage;

/**
 * The pages being edited in this request, each with its editor, as EditPage holds them.
 *
 * AbuseFilter prepares an edit on EditPage's own WikiPage, and so does the save: the parse is
 * done once and shared. The EditFilter hook, which core runs before AbuseFilter's filters, records
 * that WikiPage here, so that added_files_nsfw_score can prepare the same edit and share that parse,
 * through core's public hook rather than AbuseFilter's internals.
 */
class EditedPages {

	/** @var array[] by prefixed DB key: [ WikiPage, UserIdentity ] */
	private array $pages = [];

	public function add( WikiPage $page, UserIdentity $user ): void {
		$this->pages[$page->getTitle()->getPrefixedDBkey()] = [ $page, $user ];
	}

	/**
	 * @return array [ ?WikiPage, ?UserIdentity ]: nulls for an edit that did not come through EditPage
	 */
	public function get( Title $title ): array {
		return $this->pages[$title->getPrefixedDBkey()] ?? [ null, null ];
	}
}
