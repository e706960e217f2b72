<?php

namespace MediaWiki\Extension\Nsfwoid\Hooks;

use MediaWiki\Extension\Nsfwoid\EditedPages;
use MediaWiki\Hook\EditFilterHook;

/**
 * Records the page an edit is saved to, and its editor, as EditPage holds them (EditedPages):
 * EditFilter runs before EditFilterMergedContent, where AbuseFilter checks the edit.
 */
class EditHooks implements EditFilterHook {

	private EditedPages $editedPages;

	public function __construct( EditedPages $editedPages ) {
		$this->editedPages = $editedPages;
	}

	/** @inheritDoc */
	public function onEditFilter( $editor, $text, $section, &$error, $summary ) {
		$context = $editor->getContext();
		$this->editedPages->add( $context->getWikiPage(), $context->getUser() );
	}
}
