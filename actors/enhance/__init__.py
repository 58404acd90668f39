"""The ``enhance`` actor template: photos in by URL, enhanced photos out beside them."""
