<?php
// Router for `php -S`: a wiki's uploads come from its own upload directory (NSFWOID_TEST_UPLOADS),
// everything else from MediaWiki's directory.
$path = rawurldecode( parse_url( $_SERVER['REQUEST_URI'], PHP_URL_PATH ) );
if ( !str_starts_with( $path, '/images/' ) ) {
	return false;
}
$uploads = realpath( getenv( 'NSFWOID_TEST_UPLOADS' ) );
$file = realpath( $uploads . substr( $path, strlen( '/images' ) ) );
if ( $file === false || !str_starts_with( $file, $uploads . '/' ) || !is_file( $file ) ) {
	http_response_code( 404 );
	return true;
}
header( 'Content-Type: ' . mime_content_type( $file ) );
readfile( $file );
return true;
