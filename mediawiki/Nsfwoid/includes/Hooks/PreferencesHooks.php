<?php

namespace MediaWiki\Extension\Nsfwoid\Hooks;

use MediaWiki\Permissions\PermissionManager;
use MediaWiki\Preferences\Hook\GetPreferencesHook;

/**
 * A preference for reviewers: thumbnails on Special:NsfwoidReview shown unblurred. `blur=0` or
 * `blur=1` in the page's URL overrides it.
 */
class PreferencesHooks implements GetPreferencesHook {

	public const UNBLURRED = 'nsfwoid-review-unblurred';

	private PermissionManager $permissionManager;

	public function __construct( PermissionManager $permissionManager ) {
		$this->permissionManager = $permissionManager;
	}

	/** @inheritDoc */
	public function onGetPreferences( $user, &$preferences ) {
		if ( $this->permissionManager->userHasRight( $user, 'nsfwoid-review' ) ) {
			$preferences[self::UNBLURRED] = [
				'type' => 'toggle',
				'label-message' => 'nsfwoid-pref-review-unblurred',
				'section' => 'rendering/files',
			];
		}
	}
}
