"""nsfwoid: an NSFW image-scoring service built around Yahoo's open_nsfw model."""
