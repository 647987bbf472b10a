"""matplotlib's config folder for the commands that plot (`evaluate`, `report`,
`privacy-check`): where matplotlib has no config or cache folder it can write (MPLCONFIGDIR,
or its default ones, unwritable), its import makes a temporary one (`mkdtemp`) and only then
registers its removal at exit, so a SIGTERM landing between the two left the folder behind.
`own_config` makes that folder itself instead, before matplotlib is imported, and removes it
as the command ends (its `finally`, which `ends_at_sigterm` runs on SIGTERM as at Ctrl-C),
the signal held off from the folder's making until its name is where that clean-up finds it
(cli/errors.py `sigterm_held`). Where matplotlib's own folders are writable, nothing changes
(its font cache kept there across runs)."""

from __future__ import annotations

import functools
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from blindmatch.cli.errors import sigterm_held

PREFIX = "blindmatch-matplotlib-"  # the folder's, in the temp dir


def _folders() -> list[Path]:
    """The folders matplotlib would use for its config and its cache, as it picks them
    (matplotlib/__init__.py `_get_config_or_cache_dir`): MPLCONFIGDIR for both where set;
    else, on Linux and FreeBSD, its XDG config and cache folders; elsewhere ~/.matplotlib
    (on Windows, where that is not a folder, %LOCALAPPDATA%'s)."""
    if os.environ.get("MPLCONFIGDIR"):
        return [Path(os.environ["MPLCONFIGDIR"])]
    if sys.platform.startswith(("linux", "freebsd")):
        config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
        cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        return [Path(config, "matplotlib"), Path(cache, "matplotlib")]
    old = Path.home() / ".matplotlib"
    if sys.platform == "win32" and not old.is_dir() and os.environ.get("LOCALAPPDATA"):
        return [Path(os.environ["LOCALAPPDATA"], "matplotlib")]
    return [old]


def _writable(folder: Path) -> bool:
    """Whether matplotlib would take `folder` (made where missing, as it does)."""
    try:
        folder = folder.resolve()
        folder.mkdir(parents=True, exist_ok=True)
    except (OSError, RuntimeError):
        return False
    return os.access(folder, os.W_OK) and folder.is_dir()


def needed() -> bool:
    """Whether matplotlib, imported now, would make a temporary config folder of its own."""
    if "matplotlib" in sys.modules:  # (its folders picked already)
        return False
    try:
        return not all(_writable(f) for f in _folders())
    except RuntimeError:  # (no home folder: matplotlib makes one too)
        return True


@contextmanager
def own_config() -> Iterator[None]:
    """The block run with MPLCONFIGDIR a folder of ours in the temp dir where matplotlib would
    make one of its own (`needed`), removed as the block ends, SIGTERM included; the variable
    as it was after."""
    if not needed():
        yield
        return
    before, folder = os.environ.get("MPLCONFIGDIR"), ""
    try:
        with sigterm_held():  # (no SIGTERM between its making and `folder` naming it)
            folder = tempfile.mkdtemp(prefix=PREFIX)
        os.environ["MPLCONFIGDIR"] = folder
        yield
    finally:
        if before is None:
            os.environ.pop("MPLCONFIGDIR", None)
        else:
            os.environ["MPLCONFIGDIR"] = before
        if folder:
            shutil.rmtree(folder, ignore_errors=True)


def plots(handler: Callable[[Any], int]) -> Callable[[Any], int]:
    """A command's handler that may import matplotlib, run under `own_config` (under
    `ends_at_sigterm`, so that a SIGTERM ends it through the clean-up)."""

    @functools.wraps(handler)
    def plotting(args: Any) -> int:
        with own_config():
            return handler(args)

    return plotting


__all__ = ["PREFIX", "needed", "own_config", "plots"]
