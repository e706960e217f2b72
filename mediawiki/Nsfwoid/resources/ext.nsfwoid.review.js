/* Special:NsfwoidReview: the first click on a blurred thumbnail reveals it, instead of following its link. */
$( function () {
	$( '.nsfwoid-blurred' ).on( 'click', function ( event ) {
		var $thumb = $( this );
		if ( !$thumb.hasClass( 'nsfwoid-revealed' ) ) {
			event.preventDefault();
			$thumb.addClass( 'nsfwoid-revealed' );
		}
	} );
} );
