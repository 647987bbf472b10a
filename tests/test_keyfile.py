"""The owner-only key-file check the key readers share (matcher/storage/keyfile.py): the
two-server roles' key files (cli/twoparties.py `read_key`) and a look-up server's copy of the
look-up key (storage/shard_source.py `read_lookup_key`) refuse the same files, each with its
own words."""

from __future__ import annotations

from pathlib import Path

import pytest

from blindmatch.cli.twoparties import read_key
from blindmatch.client.errors import InputError
from blindmatch.matcher.errors import StartupRefused
from blindmatch.matcher.storage.keyfile import KeyFileProblem, read_owner_only
from blindmatch.matcher.storage.shard_source import read_lookup_key


@pytest.mark.parametrize(
    ("mode", "content", "problem", "cli_says", "lookup_says"),
    [
        (0o600, "a key\n", None, None, None),
        (0o400, "a key\n", None, None, None),
        (0o640, "a key\n", "readable", "readable by others than its owner (mode 640)",
         "readable by others than its owner (mode 640)"),
        (0o604, "a key\n", "readable", "(mode 604); whoever reads it can call the roles",
         "it lets whoever reads it send this server changes"),
        (0o600, "  \n", "empty", "is empty (make one: `blindmatch secret new FILE`)",
         "is empty; copy the matcher's DIR/lookup.key"),
        (0o600, None, "missing", ": not found", ": not found; copy the matcher's"),
    ],
)  # fmt: skip
def test_both_readers_refuse_the_same_key_files_each_in_its_own_words(
    tmp_path: Path,
    mode: int,
    content: str | None,
    problem: str | None,
    cli_says: str | None,
    lookup_says: str | None,
) -> None:
    path = tmp_path / "key"
    if content is not None:
        path.write_text(content)
        path.chmod(mode)
    if problem is None:
        assert read_owner_only(path) == read_key(path) == read_lookup_key(path) == "a key"
        return
    with pytest.raises(KeyFileProblem) as shared:
        read_owner_only(path)
    assert shared.value.problem == problem
    with pytest.raises(InputError) as cli:
        read_key(path)
    with pytest.raises(StartupRefused) as lookup:
        read_lookup_key(path)
    assert str(path) in str(cli.value) and cli_says in str(cli.value)
    assert str(path) in str(lookup.value) and lookup_says in str(lookup.value)
    if problem == "readable":
        assert f"chmod 600 {path}" in str(cli.value) and f"chmod 600 {path}" in str(lookup.value)


def test_a_folder_is_not_a_key_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a key file"):
        read_key(tmp_path)
    with pytest.raises(StartupRefused, match="not a look-up key file"):
        read_lookup_key(tmp_path)
