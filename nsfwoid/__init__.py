"""nsfwoid: NSFW image scoring service (Yahoo open_nsfw on onnxruntime) for Wikimedia."""

from importlib import metadata

NAME = "nsfwoid"


def package_version() -> str:
    """The installed distribution's version, as `nsfwoid --version` and /_info report it."""
    try:
        return metadata.version(NAME)
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"
