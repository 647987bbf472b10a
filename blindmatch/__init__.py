"""blindmatch: privacy-preserving record matching.

This folder is the one import namespace the project installs under. The
top-level folders are mapped into it (symbolic links in the checkout; copied
into the wheel), so nothing generic lands in site-packages:

    blindmatch.protos   <- protos/    the gRPC contract and its generated code
    blindmatch.client   <- client/    what runs on a member's machine
    blindmatch.matcher  <- matcher/   the linkage service
    blindmatch.schemas  <- schemas/   the shipped linkage schemas (data only)

and the command line, above both, lives here: `blindmatch.cli` (`python -m blindmatch`).

See docs/architecture.md for the layers and what may import what.
"""

from typing import Any


def __getattr__(name: str) -> Any:
    """`__version__`, from the installed package's metadata, read only when asked for
    (reading metadata is a noticeable part of a short command's start-up)."""
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("blindmatch")
    except PackageNotFoundError:  # a checkout used without being installed
        return "0+unknown"
