/*
 * Special:NsfwoidReview: the first click on a blurred thumbnail reveals it, instead of following its link;
 * "Mark reviewed" goes through action=nsfwoidreview without reloading the page, where the plain form would.
 */
$( function () {
	$( '.nsfwoid-blurred' ).on( 'click', function ( event ) {
		var $thumb = $( this );
		if ( !$thumb.hasClass( 'nsfwoid-revealed' ) ) {
			event.preventDefault();
			$thumb.addClass( 'nsfwoid-revealed' );
		}
	} );
	$( '.nsfwoid-review-form' ).on( 'submit', function ( event ) {
		var $form = $( this );
		event.preventDefault();
		$form.find( 'button, input[type="submit"]' ).prop( 'disabled', true );
		new mw.Api().postWithToken( 'csrf', {
			action: 'nsfwoidreview',
			title: $form.find( '[name="reviewtitle"]' ).val(),
			sha1: $form.find( '[name="reviewsha1"]' ).val()
		} ).then( function () {
			$form.closest( 'tr' ).addClass( 'nsfwoid-row-reviewed' );
			$form.replaceWith( $( '<span>' ).addClass( 'nsfwoid-reviewed' ).text( mw.msg( 'nsfwoid-review-done' ) ) );
		}, function ( code, result ) {
			$form.find( 'button, input[type="submit"]' ).prop( 'disabled', false );
			mw.notify( new mw.Api().getErrorMessage( result ), { type: 'error' } );
		} );
	} );
} );
