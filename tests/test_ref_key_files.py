"""`index add`/`sync --ref-key FILE` refuses a file that is clearly not a ref key: the linkage
secret the folder was encoded with (which partners hold: they could test a guessed local id
against the references), a sealed secret, a member's key, a CSV. Before, any file of 16 bytes
or more was taken as the key. Against a real matcher on loopback; its index is left empty."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from blindmatch.cli import main
from blindmatch.client import ProjectTokens
from blindmatch.client.encoding import refs
from blindmatch.client.encoding.encode import read_secret
from blindmatch.client.encoding.encoded import Encoded
from tests.support import Matcher, Org, encode


@pytest.fixture
def south(orgs: dict[str, Org], secret_file: Path, tmp_path: Path) -> Encoded:
    return encode(orgs["south"], tmp_path / "south.encoded", read_secret(secret_file))


def sync(matcher: Matcher, project: ProjectTokens, south: Encoded, key: Path) -> int:
    return main(["index", "sync", str(south.path), "--project", "trial", "--token",
                 project.tokens["south"], "--ref-key", str(key), "--server", matcher.target,
                 "--quiet"])  # fmt: skip


def test_the_linkage_secret_a_sealed_secret_a_key_or_a_csv_is_refused_as_a_ref_key(
    matcher: Matcher,
    project: ProjectTokens,
    south: Encoded,
    orgs: dict[str, Org],
    secret_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    private, public, sealed = tmp_path / "north.key", tmp_path / "north.pub", tmp_path / "s.sealed"
    assert main(["secret", "keygen", "--private", str(private), "--public", str(public),
                 "--label", "north"]) == 0  # fmt: skip
    assert main(["secret", "seal", "--secret-file", str(secret_file), "--to", str(public),
                 "--out", str(sealed)]) == 0  # fmt: skip
    capsys.readouterr()
    said = {
        secret_file: f"not a ref key: it is the linkage secret {south.path} was encoded with",
        sealed: "not a ref key: it is a sealed linkage secret",
        private: "not a ref key: it is a key file",
        public: "not a ref key: it is a key file",
        orgs["south"].csv: "not a ref key: it has 5 lines (a CSV or other data file?)",
    }
    for key, refusal in said.items():
        before = key.read_bytes()
        assert sync(matcher, project, south, key) == 2, key
        err = capsys.readouterr().err
        assert err.startswith(f"Error: {key}: {refusal}"), err
        assert "A ref key is the member's own one-line key" in err
        assert key.read_bytes() == before
    with matcher.member(project.tokens["south"]) as member:
        assert member.list_index("trial") == {}  # nothing was sent under any of them
    # A key `sync` made, and one made by hand (any one line of 16 characters or more), do.
    made = tmp_path / "south.refkey"
    assert sync(matcher, project, south, made) == 0 and made.exists()
    assert sync(matcher, project, south, made) == 0
    by_hand = tmp_path / "by-hand.refkey"
    by_hand.write_text("a passphrase, of my own choosing\n", encoding="utf-8")
    assert sync(matcher, project, south, by_hand) == 0


def test_the_linkage_secret_check_runs_once_a_key_and_secret_and_is_noted_beside_the_key(
    matcher: Matcher,
    project: ProjectTokens,
    south: Encoded,
    orgs: dict[str, Org],
    secret_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The check is one scrypt of 128 MiB (0.45 s); before, every `add`/`sync` with a key that
    was there paid it. Now a key that passed is noted in `KEY.checked` (an HMAC under the key,
    never the key), and only another key or another folder's secret is checked again."""
    from blindmatch.client.encoding import fingerprint as fp

    asked: list[bytes] = []  # the secrets the fingerprint was derived under (the real one)
    real = fp.fingerprint

    def spied(schema: dict[str, Any], key: bytes) -> bytes:
        asked.append(key)
        return real(schema, key)

    monkeypatch.setattr(fp, "fingerprint", spied)

    def paid(key: Path) -> bool:
        return key.read_bytes().strip() in asked

    # The linkage secret is refused every time, and nothing is noted of it.
    for _ in range(2):
        assert sync(matcher, project, south, secret_file) == 2
        assert "it is the linkage secret" in capsys.readouterr().err
    assert not refs.checked_file(secret_file).exists()
    # A key made by `sync` is noted when made: no check then, none the next time.
    made = tmp_path / "south.refkey"
    assert sync(matcher, project, south, made) == 0 and made.exists()
    assert sync(matcher, project, south, made) == 0
    assert not paid(made) and refs.checked_file(made).exists()
    # A key of one's own is checked on its first change only, and again once it is changed.
    by_hand = tmp_path / "by-hand.refkey"
    by_hand.write_text("a passphrase, of my own choosing\n", encoding="utf-8")
    assert sync(matcher, project, south, by_hand) == 0 and paid(by_hand)
    asked.clear()
    assert sync(matcher, project, south, by_hand) == 0 and not paid(by_hand)
    noted = refs.checked_file(by_hand).read_text()
    assert b"passphrase" not in noted.encode() and by_hand.read_bytes().hex() not in noted
    by_hand.write_text("another passphrase, also my own\n", encoding="utf-8")
    assert sync(matcher, project, south, by_hand) == 0 and paid(by_hand)
    # A noted key is still refused for a folder encoded with it as the linkage secret.
    again = encode(orgs["south"], tmp_path / "again.encoded", read_secret(made))
    assert sync(matcher, project, again, made) == 2
    err = capsys.readouterr().err
    assert f"it is the linkage secret {again.path} was encoded with" in err
