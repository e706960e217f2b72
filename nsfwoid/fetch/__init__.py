"""Fetching images from URLs safely: the downloader (download.py) and the address guard (addresses.py)."""
