/*
 * Special:NsfwoidReview: the first click on a blurred thumbnail reveals it, instead of following its link. A row's
 * buttons give a verdict or only mark it reviewed (action=nsfwoidreview) without reloading the page, where the plain
 * form would post it.
 */
$( function () {
	$( '.nsfwoid-blurred' ).on( 'click', function ( event ) {
		var $thumb = $( this );
		if ( !$thumb.hasClass( 'nsfwoid-revealed' ) ) {
			event.preventDefault();
			$thumb.addClass( 'nsfwoid-revealed' );
		}
	} );
	$( '.nsfwoid-review-form button' ).on( 'click', function ( event ) {
		var $button = $( this ),
			$form = $button.closest( 'form' ),
			$row = $form.closest( 'tr' ),
			verdict = $button.attr( 'name' ) === 'reviewverdict' ? $button.val() : null,
			params = {
				action: 'nsfwoidreview',
				title: $form.find( '[name="reviewtitle"]' ).val(),
				sha1: $form.find( '[name="reviewsha1"]' ).val()
			};
		event.preventDefault();
		if ( verdict ) {
			params.verdict = verdict;
		}
		$form.find( 'button' ).prop( 'disabled', true );
		new mw.Api().postWithToken( 'csrf', params ).then( function () {
			var $state = $row.find( '.nsfwoid-review-state' );
			if ( !$state.find( '.nsfwoid-reviewed' ).length ) {
				$state.prepend( $( '<span>' ).addClass( 'nsfwoid-reviewed' ).text( mw.msg( 'nsfwoid-review-done' ) ) );
			}
			if ( verdict ) {
				// eslint-disable-next-line mediawiki/msg-doc
				$state.find( '.nsfwoid-verdict' ).text( mw.msg( 'nsfwoid-verdict-' + verdict ) );
			}
			$row.addClass( 'nsfwoid-row-reviewed' );
			$form.find( 'button[name="reviewmark"]' ).remove();
			$form.find( 'button' ).prop( 'disabled', false );
		}, function ( code, result ) {
			$form.find( 'button' ).prop( 'disabled', false );
			mw.notify( new mw.Api().getErrorMessage( result ), { type: 'error' } );
		} );
	} );
} );
