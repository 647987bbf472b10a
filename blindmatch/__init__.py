"""blindmatch: privacy-preserving record matching.

This folder is the one import namespace the project installs under. The
top-level folders are mapped into it (symbolic links in the checkout; copied
into the wheel), so nothing generic lands in site-packages:

    blindmatch.protos   <- protos/    the gRPC contract and its generated code
    blindmatch.client   <- client/    what runs on a member's machine
    blindmatch.matcher  <- matcher/   the linkage service

See docs/architecture.md for the layers and what may import what.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("blindmatch")
except PackageNotFoundError:  # a checkout used without being installed
    __version__ = "0+unknown"
