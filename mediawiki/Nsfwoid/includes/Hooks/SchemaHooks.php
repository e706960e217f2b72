<?php

namespace MediaWiki\Extension\Nsfwoid\Hooks;

use MediaWiki\Installer\Hook\LoadExtensionSchemaUpdatesHook;

/**
 * Installs the table with update.php. No services: the installer runs this hook before they exist.
 */
class SchemaHooks implements LoadExtensionSchemaUpdatesHook {

	/** @inheritDoc */
	public function onLoadExtensionSchemaUpdates( $updater ) {
		$dbType = $updater->getDB()->getType();
		$updater->addExtensionTable( 'nsfwoid_score', dirname( __DIR__, 2 ) . "/sql/$dbType/tables-generated.sql" );
	}
}
