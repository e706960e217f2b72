<?php

use MediaWiki\Config\ServiceOptions;
use MediaWiki\Extension\Nsfwoid\AddedFiles;
use MediaWiki\Extension\Nsfwoid\EditedPages;
use MediaWiki\Extension\Nsfwoid\FileScorer;
use MediaWiki\Extension\Nsfwoid\ForeignScores;
use MediaWiki\Extension\Nsfwoid\Metrics;
use MediaWiki\Extension\Nsfwoid\NsfwoidClient;
use MediaWiki\Extension\Nsfwoid\PendingUploads;
use MediaWiki\Extension\Nsfwoid\ReviewQueue;
use MediaWiki\Extension\Nsfwoid\ScoreLookup;
use MediaWiki\Extension\Nsfwoid\ScoreStore;
use MediaWiki\Extension\Nsfwoid\VerdictStore;
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
			$services->getHttpRequestFactory(),
			$services->get( 'Nsfwoid.Metrics' )
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
	'Nsfwoid.Metrics' => static function ( MediaWikiServices $services ): Metrics {
		return new Metrics(
			// MediaWiki 1.41 and later
			$services->hasService( 'StatsFactory' ) ? $services->get( 'StatsFactory' ) : null,
			$services->getStatsdDataFactory()
		);
	},
	'Nsfwoid.PendingUploads' => static function (): PendingUploads {
		return new PendingUploads();
	},
	'Nsfwoid.ReviewQueue' => static function ( MediaWikiServices $services ): ReviewQueue {
		return new ReviewQueue(
			new ServiceOptions( ReviewQueue::CONSTRUCTOR_OPTIONS, $services->getMainConfig() ),
			$services->getDBLoadBalancer(),
			$services->getRepoGroup(),
			$services->getActorNormalization(),
			// MediaWiki 1.42 and later, where blocks are in `block` and `block_target`
			$services->hasService( 'HideUserUtils' ) ? $services->get( 'HideUserUtils' ) : null
		);
	},
	'Nsfwoid.ScoreLookup' => static function ( MediaWikiServices $services ): ScoreLookup {
		return new ScoreLookup(
			new ServiceOptions( ScoreLookup::CONSTRUCTOR_OPTIONS, $services->getMainConfig() ),
			$services->get( 'Nsfwoid.Client' ),
			$services->get( 'Nsfwoid.ScoreStore' ),
			$services->get( 'Nsfwoid.FileScorer' ),
			$services->get( 'Nsfwoid.ForeignScores' ),
			$services->getMainWANObjectCache(),
			$services->get( 'Nsfwoid.Metrics' ),
			LoggerFactory::getInstance( 'Nsfwoid' )
		);
	},
	'Nsfwoid.ScoreStore' => static function ( MediaWikiServices $services ): ScoreStore {
		return new ScoreStore( $services->getDBLoadBalancer(), $services->get( 'Nsfwoid.Metrics' ) );
	},
	'Nsfwoid.VerdictStore' => static function ( MediaWikiServices $services ): VerdictStore {
		return new VerdictStore(
			new ServiceOptions( VerdictStore::CONSTRUCTOR_OPTIONS, $services->getMainConfig() ),
			$services->getDBLoadBalancer(),
			$services->getActorNormalization(),
			$services->get( 'Nsfwoid.ScoreStore' ),
			$services->get( 'Nsfwoid.ReviewQueue' ),
			$services->getMainWANObjectCache()
		);
	},
];
