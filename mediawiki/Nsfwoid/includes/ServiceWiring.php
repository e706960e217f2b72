<?php

use MediaWiki\Config\ServiceOptions;
use MediaWiki\Extension\Nsfwoid\AddedFiles;
use MediaWiki\Extension\Nsfwoid\EditedPages;
use MediaWiki\Extension\Nsfwoid\FileScorer;
use MediaWiki\Extension\Nsfwoid\ForeignScores;
use MediaWiki\Extension\Nsfwoid\NsfwoidClient;
use MediaWiki\Extension\Nsfwoid\PendingUploads;
use MediaWiki\Extension\Nsfwoid\ScoreLookup;
use MediaWiki\Extension\Nsfwoid\ScoreStore;
use MediaWiki\Logger\LoggerFactory;
use MediaWiki\MediaWikiServices;

/** @phpcs-require-sorted-array */
return [
	'Nsfwoid.AddedFiles' => static function ( MediaWikiServices $services ): AddedFiles {
		return new AddedFiles(
			$services->getContentRenderer(),
			$services->getDBLoadBalancer(),
			$services->getRepoGroup()
		);
	},
	'Nsfwoid.Client' => static function ( MediaWikiServices $services ): NsfwoidClient {
		return new NsfwoidClient(
			new ServiceOptions( NsfwoidClient::CONSTRUCTOR_OPTIONS, $services->getMainConfig() ),
			$services->getHttpRequestFactory()
		);
	},
	'Nsfwoid.EditedPages' => static function (): EditedPages {
		return new EditedPages();
	},
	'Nsfwoid.FileScorer' => static function ( MediaWikiServices $services ): FileScorer {
		return new FileScorer(
			new ServiceOptions( FileScorer::CONSTRUCTOR_OPTIONS, $services->getMainConfig() ),
			$services->get( 'Nsfwoid.Client' ),
			$services->get( 'Nsfwoid.ScoreStore' ),
			LoggerFactory::getInstance( 'Nsfwoid' )
		);
	},
	'Nsfwoid.ForeignScores' => static function ( MediaWikiServices $services ): ForeignScores {
		return new ForeignScores(
			new ServiceOptions( ForeignScores::CONSTRUCTOR_OPTIONS, $services->getMainConfig() ),
			$services->getHttpRequestFactory(),
			$services->get( 'Nsfwoid.ScoreStore' ),
			$services->getLocalServerObjectCache()
		);
	},
	'Nsfwoid.PendingUploads' => static function (): PendingUploads {
		return new PendingUploads();
	},
	'Nsfwoid.ScoreLookup' => static function ( MediaWikiServices $services ): ScoreLookup {
		return new ScoreLookup(
			new ServiceOptions( ScoreLookup::CONSTRUCTOR_OPTIONS, $services->getMainConfig() ),
			$services->get( 'Nsfwoid.Client' ),
			$services->get( 'Nsfwoid.ScoreStore' ),
			$services->get( 'Nsfwoid.FileScorer' ),
			$services->get( 'Nsfwoid.ForeignScores' ),
			$services->getMainWANObjectCache(),
			LoggerFactory::getInstance( 'Nsfwoid' )
		);
	},
	'Nsfwoid.ScoreStore' => static function ( MediaWikiServices $services ): ScoreStore {
		return new ScoreStore( $services->getDBLoadBalancer() );
	},
];
