<?php

namespace MediaWiki\Extension\Nsfwoid;

use FormatJson;
use MediaWiki\Config\ServiceOptions;
use MediaWiki\Http\HttpRequestFactory;

/**
 * Calls the nsfwoid service. Every call has an explicit timeout, and every failure is a
 * ScoringException.
 */
class NsfwoidClient {

	public const CONSTRUCTOR_OPTIONS = [ 'NsfwoidServiceUrl' ];

	private string $baseUrl;
	private HttpRequestFactory $httpRequestFactory;
	private Metrics $metrics;

	public function __construct( ServiceOptions $options, HttpRequestFactory $httpRequestFactory, Metrics $metrics ) {
		$options->assertRequiredOptions( self::CONSTRUCTOR_OPTIONS );
		$this->baseUrl = rtrim( $options->get( 'NsfwoidServiceUrl' ), '/' );
		$this->httpRequestFactory = $httpRequestFactory;
		$this->metrics = $metrics;
	}

	/**
	 * Scores an image sent as bytes.
	 */
	public function scoreBytes( string $bytes, float $timeout ): ServiceScore {
		return ServiceScore::newFromJson(
			$this->call( 'POST', '/v1/score', $timeout, $bytes, 'application/octet-stream' )
		);
	}

	/**
	 * Scores an image that the service downloads. The service vets the URL against its own
	 * allowlist.
	 */
	public function scoreUrl( string $url, float $timeout ): ServiceScore {
		return ServiceScore::newFromJson( $this->call(
			'POST', '/v1/score', $timeout, http_build_query( [ 'url' => $url ] ), 'application/x-www-form-urlencoded'
		) );
	}

	/**
	 * The id of the model the service runs now, from its health check (ServiceScore::modelId).
	 */
	public function currentModel( float $timeout ): string {
		$named = $this->call( 'GET', '/healthz', $timeout )['model'] ?? null;
		$model = is_array( $named ) ? ServiceScore::modelId( $named ) : null;
		if ( !is_string( $model ) ) {
			throw new ScoringException( 'The service did not name its model', true );
		}
		return $model;
	}

	/**
	 * @return array the decoded JSON answer
	 * @throws ScoringException
	 */
	private function call(
		string $method, string $path, float $timeout, ?string $body = null, ?string $contentType = null
	): array {
		try {
			return $this->request( $method, $path, $timeout, $body, $contentType );
		} catch ( ScoringException $e ) {
			if ( $e->getFailureKind() !== null ) {
				$this->metrics->increment( 'service_failures_total', [ 'kind' => $e->getFailureKind() ] );
			}
			throw $e;
		}
	}

	/**
	 * @return array the decoded JSON answer
	 * @throws ScoringException
	 */
	private function request(
		string $method, string $path, float $timeout, ?string $body = null, ?string $contentType = null
	): array {
		if ( $timeout <= 0 ) {
			throw new ScoringException( 'No time was left to call the service', true );
		}
		$options = [ 'method' => $method, 'timeout' => $timeout, 'connectTimeout' => $timeout ];
		if ( $body !== null ) {
			$options['postData'] = $body;
		}
		$request = $this->httpRequestFactory->create( $this->baseUrl . $path, $options, __METHOD__ );
		$request->setHeader( 'Accept', 'application/json' );
		if ( $contentType !== null ) {
			$request->setHeader( 'Content-Type', $contentType );
		}
		$executed = $request->execute();
		if ( $executed->hasMessage( 'http-timed-out' ) ) {
			throw new ScoringException( "The service did not answer within $timeout s", true, 'timeout' );
		}
		$status = $request->getStatus();
		$answer = FormatJson::decode( (string)$request->getContent(), true );
		if ( $status >= 400 && $status < 500 ) {
			$problem = is_array( $answer ) ? ( $answer['type'] ?? '' ) . ': ' . ( $answer['detail'] ?? '' ) : '';
			throw new ScoringException( "The service refused the image ($status $problem)", false, '4xx' );
		}
		if ( $status !== 200 || !is_array( $answer ) ) {
			$why = $status ? "HTTP $status" : 'unreachable';
			throw new ScoringException( "The service failed: $why", true, $status ? '5xx' : 'refused' );
		}
		return $answer;
	}
}
