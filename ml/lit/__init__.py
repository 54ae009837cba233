"""LiT: an image tower trained against a locked text tower on a catalog's own images and titles."""
