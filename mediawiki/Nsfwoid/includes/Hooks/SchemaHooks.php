<?php

namespace MediaWiki\Extension\Nsfwoid\Hooks;

use MediaWiki\Extension\Nsfwoid\ModelIdMigration;
use MediaWiki\Installer\Hook\LoadExtensionSchemaUpdatesHook;

/**
 * Installs the tables with update.php, and migrates a wiki whose nsfwoid_score names each
 * score's model by its sha256. No services: the installer runs this hook before they exist.
 */
class SchemaHooks implements LoadExtensionSchemaUpdatesHook {

	/** @inheritDoc */
	public function onLoadExtensionSchemaUpdates( $updater ) {
		$sql = dirname( __DIR__, 2 ) . '/sql/' . $updater->getDB()->getType();
		// A new wiki: every table.
		$updater->addExtensionTable( 'nsfwoid_score', "$sql/tables-generated.sql" );
		// A wiki on the sha256-keyed schema, whose index (nss_model, nss_sha1) marks it: the model table,
		// each score's model as its id, then nss_model's new type without that index.
		$updater->addExtensionTable( 'nsfwoid_model', "$sql/patch-nsfwoid_model.sql" );
		$updater->addExtensionUpdate( [ [ ModelIdMigration::class, 'run' ] ] );
		$updater->dropExtensionIndex( 'nsfwoid_score', 'nss_model_sha1', "$sql/patch-nsfwoid_score-nss_model.sql" );
		// A wiki from before reviews and verdicts were recorded.
		$updater->addExtensionTable( 'nsfwoid_review', "$sql/patch-nsfwoid_review.sql" );
		$updater->addExtensionTable( 'nsfwoid_verdict', "$sql/patch-nsfwoid_verdict.sql" );
	}
}
