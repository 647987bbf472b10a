"""The shared secret: made strong, refused when weak, sealed between members, and never
guessable from the upload fingerprint cheaply or from the matcher's error messages."""

from __future__ import annotations

import base64
import json
import os
import secrets
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blindmatch.cli import main
from blindmatch.client.encoding.encode import read_secret
from blindmatch.client.encoding.encoded import read_encoded
from blindmatch.client.encoding.fingerprint import fingerprint
from blindmatch.client.encoding.schema import load_schema
from blindmatch.client.encoding.sharedsecret import secret_id, strength_problem
from blindmatch.client.errors import RejectedError
from blindmatch.protos.wire import fingerprint_id
from tests.support import PERSON_SCHEMA, Matcher, Org, ProjectTokens, assert_refused, encode_cli


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_secret_new_writes_a_256_bit_secret_owner_only_and_never_overwrites(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "linkage.secret"
    old = os.umask(0o022)
    try:
        assert main(["secret", "new", str(path)]) == 0
    finally:
        os.umask(old)
    text = path.read_text()
    assert len(text.strip()) == 64 and int(text, 16) >= 0 and text.endswith("\n")
    assert mode(path) == 0o600
    printed = capsys.readouterr().out
    assert secret_id(text.encode()) in printed and text.strip() not in printed
    assert main(["secret", "new", str(path)]) == 2
    assert "already exists; refusing to overwrite" in capsys.readouterr().err
    assert path.read_text() == text


@settings(max_examples=30, deadline=None)
@given(raw=st.binary(min_size=32, max_size=64).filter(lambda b: len(set(b[:32])) >= 20))
def test_hex_or_base64_of_32_random_looking_bytes_is_accepted(raw: bytes) -> None:
    for text in (raw.hex(), base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()):
        assert strength_problem(text.encode()) is None, text
    assert strength_problem(secrets.token_urlsafe(32).encode()) is None


@pytest.mark.parametrize(
    "weak, why",
    [
        ("password1", "not hex or base64"),
        ("correct horse battery staple, shared by every member", "not hex or base64"),
        ("Tr0ub4dor&3-and-a-much-longer-passphrase-than-that", "not hex or base64"),
        ("9f3c2a7e5b1d8046c2e9a0f4b7d3e158", "decodes to 16 bytes"),  # fixed: test ids must repeat
        ("ab" * 32, "do not look random"),
        ("00112233" * 8, "do not look random"),
        (b"a shared secret of 32 characters".hex(), "do not look random"),
        (base64.b64encode(b"the same word the same word the same").decode(), "do not look"),
    ],
)
def test_weak_secrets_are_refused_with_the_rule_explained(weak: str, why: str) -> None:
    problem = strength_problem(weak.encode())
    assert problem is not None and why in problem, problem
    assert "`blindmatch secret new`" in problem


def test_encode_refuses_a_weak_secret_and_writes_nothing(
    orgs: dict[str, Org], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weak = tmp_path / "weak.secret"
    weak.write_text("password1\n")
    out = tmp_path / "out.encoded"
    code = encode_cli(orgs["north"], weak, out)
    assert_refused(capsys, code, out, "weak.secret", "too weak to encode with", "secret new")


def test_allow_weak_secret_encodes_and_says_so_loudly(
    orgs: dict[str, Org], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weak = tmp_path / "weak.secret"
    weak.write_text("password1\n")
    out = tmp_path / "out.encoded"
    org = orgs["north"]
    args = ["encode", str(org.csv), "--schema", str(PERSON_SCHEMA), "--secret-file", str(weak)]
    args += ["--mapping", str(org.mapping), "--out", str(out), "--allow-weak-secret"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "warning: WEAK SECRET accepted because of --allow-weak-secret" in printed
    report = json.loads((out / "local" / "report.json").read_text())
    assert report["warnings"][0].startswith("WEAK SECRET")


def test_the_fingerprint_changes_with_the_schema_and_the_secret_alone() -> None:
    schema = load_schema(PERSON_SCHEMA).raw
    a, b = secrets.token_hex(32).encode(), secrets.token_hex(32).encode()
    assert fingerprint(schema, a) == fingerprint(json.loads(json.dumps(schema)), a)
    assert fingerprint(schema, a) != fingerprint(schema, b)
    assert fingerprint(schema, a) != fingerprint({**schema, "version": 3, "x": 1}, a)


def test_a_refused_upload_shows_no_fingerprint_bits(
    matcher: Matcher,
    project: ProjectTokens,
    orgs: dict[str, Org],
    secret_file: Path,
    tmp_path: Path,
) -> None:
    other = tmp_path / "other.secret"
    assert main(["secret", "new", str(other)]) == 0
    for name, secret in (("north", secret_file), ("south", other)):
        assert encode_cli(orgs[name], secret, tmp_path / f"{name}.encoded") == 0
    north, south = (read_encoded(tmp_path / f"{n}.encoded") for n in ("north", "south"))
    with matcher.member(project.tokens["north"]) as member:
        member.upload("trial", north)
    with matcher.member(project.tokens["south"]) as member, pytest.raises(RejectedError) as err:
        member.upload("trial", south)
    message = str(err.value)
    # It names whose upload set the project's encodings and both fingerprint ids (which
    # `project show --encoded` prints too), never any other part of a fingerprint.
    assert (
        "different schema or secret than north's upload (the earliest held in this project)"
        in message
    )
    assert "the schema is the same, so the secret differs" in message
    assert f"their fingerprint id is {fingerprint_id(south.fingerprint)}" in message
    assert f"the project's is {fingerprint_id(north.fingerprint)}" in message
    for fp in (north.fingerprint.hex(), south.fingerprint.hex()):
        assert not any(fp[i : i + 6] in message for i in range(0, len(fp) - 6)), message


def test_a_secret_sealed_to_a_member_opens_only_with_its_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = tmp_path / "linkage.secret"
    assert main(["secret", "new", str(secret)]) == 0
    for who in ("south", "retail"):
        assert main(["secret", "keygen", "--private", str(tmp_path / f"{who}.key"),
                     "--public", str(tmp_path / f"{who}.pub"), "--label", who]) == 0  # fmt: skip
        assert mode(tmp_path / f"{who}.key") == 0o600
    sealed = tmp_path / "for-south.sealed"
    assert main(["secret", "seal", "--secret-file", str(secret), "--to",
                 str(tmp_path / "south.pub"), "--out", str(sealed)]) == 0  # fmt: skip
    assert secret.read_text().strip() not in sealed.read_text()
    capsys.readouterr()
    got = tmp_path / "south.secret"
    assert main(["secret", "open", str(sealed), "--key", str(tmp_path / "south.key"),
                 "--out", str(got)]) == 0  # fmt: skip
    assert got.read_text() == secret.read_text()
    assert mode(got) == 0o600
    assert secret_id(secret.read_bytes()) in capsys.readouterr().out
    # The wrong member's key, or a tampered file, opens nothing.
    assert main(["secret", "open", str(sealed), "--key", str(tmp_path / "retail.key"),
                 "--out", str(tmp_path / "x")]) == 2  # fmt: skip
    assert "cannot be opened with this private key" in capsys.readouterr().err
    doc = json.loads(sealed.read_text())
    box = bytearray(base64.b64decode(doc["ciphertext"]))
    box[0] ^= 1
    doc["ciphertext"] = base64.b64encode(bytes(box)).decode()
    sealed.write_text(json.dumps(doc))
    assert main(["secret", "open", str(sealed), "--key", str(tmp_path / "south.key"),
                 "--out", str(tmp_path / "y")]) == 2  # fmt: skip
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_keys_given_the_wrong_way_round_or_a_binary_file_are_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`seal --to` the private key was "not a blindmatch public key"; a binary file there a
    traceback (UnicodeDecodeError); `open --key` the public key "not a private key PEM"."""
    secret = tmp_path / "linkage.secret"
    assert main(["secret", "new", str(secret)]) == 0
    assert main(["secret", "keygen", "--private", str(tmp_path / "k"), "--public",
                 str(tmp_path / "k.pub"), "--label", "south"]) == 0  # fmt: skip
    (tmp_path / "binary").write_bytes(bytes(range(256)))
    sealed = tmp_path / "s"
    told = {"k": "k: is a private key (keep it, never send it): give the member's public key",
            "binary": "binary: not a blindmatch public key"}  # fmt: skip
    capsys.readouterr()
    for to, said in told.items():
        assert main(["secret", "seal", "--secret-file", str(secret), "--to", str(tmp_path / to),
                     "--out", str(sealed)]) == 2  # fmt: skip
        assert said in capsys.readouterr().err
        assert not sealed.exists()
    assert main(["secret", "seal", "--secret-file", str(secret), "--to",
                 str(tmp_path / "k.pub"), "--out", str(sealed)]) == 0  # fmt: skip
    assert main(["secret", "open", str(sealed), "--key", str(tmp_path / "k.pub"), "--out",
                 str(tmp_path / "got")]) == 2  # fmt: skip
    assert "k.pub: is a public key: give your private key" in capsys.readouterr().err
    assert not (tmp_path / "got").exists()


def test_a_weak_secret_is_not_sealed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    weak = tmp_path / "weak.secret"
    weak.write_text("password1")
    assert main(["secret", "keygen", "--private", str(tmp_path / "k"), "--public",
                 str(tmp_path / "k.pub"), "--label", "south"]) == 0  # fmt: skip
    assert main(["secret", "seal", "--secret-file", str(weak), "--to", str(tmp_path / "k.pub"),
                 "--out", str(tmp_path / "s")]) == 2  # fmt: skip
    assert "too weak" in capsys.readouterr().err


def test_a_file_that_is_not_a_secret_is_refused_naming_it(
    orgs: dict[str, Org], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A data file given as --secret-file (a walk passed truth.csv) was taken as the secret:
    `privacy-check` ran on it, `encode --allow-weak-secret` encoded with it, and nothing
    would match the partners' encodings."""
    org = orgs["north"]
    out = tmp_path / "out.encoded"
    code = main(["encode", str(org.csv), "--schema", str(PERSON_SCHEMA), "--secret-file",
                 str(org.csv), "--mapping", str(org.mapping), "--out", str(out),
                 "--allow-weak-secret"])  # fmt: skip
    expected = "not a blindmatch secret: expected one line of text, the 64 hex digits written"
    assert_refused(capsys, code, out, f"{org.csv}: {expected}", "secret new", "lines")
    code = main(["privacy-check", str(org.csv), "--mapping", str(org.mapping), "--secret-file",
                 str(org.csv), "--out", str(out)])  # fmt: skip
    assert_refused(capsys, code, out, f"{org.csv}: {expected}")
    # Keys and sealed files are named as what they are.
    assert main(["secret", "keygen", "--private", str(tmp_path / "k"), "--public",
                 str(tmp_path / "k.pub"), "--label", "south"]) == 0  # fmt: skip
    for wrong, why in (("k", "key file (PEM)"), ("k.pub", "public key")):
        assert encode_cli(org, tmp_path / wrong, out) == 2
        assert why in capsys.readouterr().err
    (tmp_path / "binary").write_bytes(bytes(range(256)))
    assert encode_cli(org, tmp_path / "binary", out) == 2
    assert "not text" in capsys.readouterr().err


@pytest.mark.parametrize(
    "content",
    [
        b"5f0c9e2a7b41d8e36a9c04b7f21e8d5390ab6c7e4f1d2a8b9c3e6f70a1b2c3d4\n",  # `secret new`
        b"5f0c9e2a7b41d8e36a9c04b7f21e8d5390ab6c7e4f1d2a8b9c3e6f70a1b2c3d4",  # no newline
        b"  5f0c9e2a7b41d8e36a9c04b7f21e8d5390ab6c7e4f1d2a8b9c3e6f70a1b2c3d4\r\n\n",  # Windows
        base64.b64encode(bytes(range(7, 71, 2))) + b"\n",  # base64 (docs/security.md)
        base64.urlsafe_b64encode(bytes(range(200, 232))),  # url-safe base64
        b"shared secret\n",  # a phrase: read, then refused as weak unless --allow-weak-secret
    ],
)
def test_every_documented_secret_file_is_still_read(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "linkage.secret"
    path.write_bytes(content)
    assert read_secret(path) == content.strip()


def test_secret_new_where_the_file_system_has_no_hard_links_writes_it_whole_all_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """(FAT, a USB stick for a sealed file, refuses `link`: EPERM.) The file is put in the
    place its opening with O_EXCL took; an existing one is refused as before."""

    def no_links(*args: object, **kwargs: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    path = tmp_path / "linkage.secret"
    assert main(["secret", "new", str(path)]) == 0
    text = path.read_text()
    assert len(text.strip()) == 64 and mode(path) == 0o600
    assert main(["secret", "new", str(path)]) == 2
    assert "already exists; refusing to overwrite" in capsys.readouterr().err
    assert path.read_text() == text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["linkage.secret"]
