<?php

namespace MediaWiki\Extension\Nsfwoid\Api;

use ApiQuery;
use ApiQueryBase;
use MediaWiki\Extension\Nsfwoid\ForeignScores;
use MediaWiki\Extension\Nsfwoid\ScoreStore;
use RepoGroup;

/**
 * prop=nsfwscore: the stored score of each file page, for tools and patrollers. For a file of a
 * repository reached through its database (Commons, on Wikimedia's wikis), the score stored in
 * that wiki's table when this one has none.
 */
class ApiQueryNsfwScore extends ApiQueryBase {

	private RepoGroup $repoGroup;
	private ScoreStore $store;
	private ForeignScores $foreignScores;

	public function __construct(
		ApiQuery $query,
		string $moduleName,
		RepoGroup $repoGroup,
		ScoreStore $store,
		ForeignScores $foreignScores
	) {
		parent::__construct( $query, $moduleName, 'nss' );
		$this->repoGroup = $repoGroup;
		$this->store = $store;
		$this->foreignScores = $foreignScores;
	}

	public function execute() {
		// Missing pages count too: a Commons file used here has no local page.
		$pageIds = $this->getPageSet()->getGoodAndMissingTitlesByNamespace()[NS_FILE] ?? [];
		if ( !$pageIds ) {
			return;
		}
		$files = $this->repoGroup->findFiles( array_map( 'strval', array_keys( $pageIds ) ) );
		$rows = $this->store->getRows( array_map( static fn ( $file ) => $file->getSha1(), $files ) );
		// Scores that a database repository's wiki (Commons, on Wikimedia's wikis) stored are not copied here.
		$rows += $this->foreignScores->getRows( array_filter(
			$files, static fn ( $file ) => !isset( $rows[$file->getSha1()] )
		) );
		foreach ( $files as $name => $file ) {
			$row = $rows[$file->getSha1()] ?? null;
			if ( $row !== null && isset( $pageIds[$name] ) ) {
				$this->getResult()->addValue( [ 'query', 'pages', $pageIds[$name] ], $this->getModuleName(), $row );
			}
		}
	}

	public function getCacheMode( $params ) {
		return 'public';
	}

	protected function getExamplesMessages() {
		return [
			'action=query&prop=nsfwscore&titles=File:Example.jpg' => 'apihelp-query+nsfwscore-example-simple',
		];
	}
}
