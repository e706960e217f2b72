<?php

namespace MediaWiki\Extension\Nsfwoid;

use ContentHandler;
use File;
use MediaWiki\Content\Renderer\ContentRenderer;
use MediaWiki\User\UserIdentity;
use ParserOptions;
use RepoGroup;
use Title;
use Wikimedia\Rdbms\ILoadBalancer;
use WikiPage;
use WikitextContent;

/**
 * The files an edit adds to a page: those its new text links, by any means the parser knows
 * (links, galleries, templates), that the page does not link now.
 *
 * Given the edit's WikiPage and user, the new text is parsed as the edit's own prepared content,
 * which AbuseFilter and the save share: a filter on every edit then costs no second parse (a
 * second parse of a long article takes seconds).
 */
class AddedFiles {

	private ContentRenderer $contentRenderer;
	private ILoadBalancer $loadBalancer;
	private RepoGroup $repoGroup;

	public function __construct( ContentRenderer $contentRenderer, ILoadBalancer $loadBalancer, RepoGroup $repoGroup ) {
		$this->contentRenderer = $contentRenderer;
		$this->loadBalancer = $loadBalancer;
		$this->repoGroup = $repoGroup;
	}

	/**
	 * @return File[] the added files that exist, locally or in a foreign repository
	 */
	public function getAddedFiles(
		Title $title, string $newWikitext, ?WikiPage $page = null, ?UserIdentity $user = null
	): array {
		if ( $title->getContentModel() !== CONTENT_MODEL_WIKITEXT ) {
			return [];
		}
		if ( $page && $user ) {
			// As AbuseFilter prepares it, so that the prepared edit is the same one.
			$content = ContentHandler::makeContent( $newWikitext, $page->getTitle() );
			$output = $page->prepareContentForEdit( $content, null, $user )->getOutput();
		} else {
			$output = $this->contentRenderer->getParserOutput(
				new WikitextContent( $newWikitext ), $title, null, ParserOptions::newFromAnon(), false
			);
		}
		$linked = array_map( 'strval', array_keys( $output->getImages() ) );
		$before = $title->exists() ? $this->loadBalancer->getConnection( DB_REPLICA )->selectFieldValues(
			'imagelinks', 'il_to', [ 'il_from' => $title->getArticleID() ], __METHOD__
		) : [];
		$added = array_diff( $linked, $before );
		return $added ? array_values( $this->repoGroup->findFiles( array_values( $added ) ) ) : [];
	}
}
