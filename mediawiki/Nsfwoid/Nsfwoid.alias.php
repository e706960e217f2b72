<?php
/**
 * Aliases for the special pages of the extension Nsfwoid.
 *
 * @file
 */

$specialPageAliases = [];

/** English */
$specialPageAliases['en'] = [
	'NsfwoidReview' => [ 'NsfwoidReview' ],
	'NsfwoidThresholds' => [ 'NsfwoidThresholds' ],
];
