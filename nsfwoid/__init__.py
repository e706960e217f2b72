"""nsfwoid: NSFW image scoring service (Yahoo open_nsfw on onnxruntime) for Wikimedia."""

import os
from importlib import metadata

# onnxruntime's Linux wheels (1.29 and later) send telemetry to Microsoft unless this is set before onnxruntime
# loads; its disable_telemetry_events() does not stop it. Every entry point imports this package first, so no
# nsfwoid process phones home. An operator who sets ORT_DISABLE_TELEMETRY=0 explicitly gets telemetry back.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

NAME = "nsfwoid"
HOME = "https://www.mediawiki.org/wiki/Nsfwoid"


def package_version() -> str:
    """The installed distribution's version, as `nsfwoid --version` and /_info report it."""
    try:
        return metadata.version(NAME)
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"
