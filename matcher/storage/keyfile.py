"""Owner-only key files: the one check every reader of a key file shares.

A key file is one line of text that only its owner may read (mode 600 or stricter): the
two-server roles' `--key-file`, `--member-key-file` and `--party-key` files
(cli/twoparties.py `read_key`), a look-up server's copy of the matcher's look-up key
(storage/shard_source.py `read_lookup_key`). `read_owner_only` makes the checks; each caller
words the refusal for its own flag, file and risk, and raises it through its own error.
"""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Literal

Problem = Literal["missing", "not text", "readable", "empty"]


class KeyFileProblem(Exception):
    """Why a key file was refused: `problem` "missing", "not text" (a folder, or not
    UTF-8), "readable" (by others than its owner: `mode`) or "empty". Callers turn it into
    their own error; it never reaches a user as is."""

    def __init__(self, path: Path, problem: Problem, mode: int = 0) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem
        self.mode = mode


def read_owner_only(path: str | Path) -> str:
    """The file's text, stripped; `KeyFileProblem` unless it exists, is text, is readable
    by its owner only and is not empty."""
    path = Path(path)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        text = path.read_text().strip()
    except FileNotFoundError:
        raise KeyFileProblem(path, "missing") from None
    except (IsADirectoryError, UnicodeDecodeError):
        raise KeyFileProblem(path, "not text") from None
    if mode & 0o077:
        raise KeyFileProblem(path, "readable", mode)
    if not text:
        raise KeyFileProblem(path, "empty")
    return text
