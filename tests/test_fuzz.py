"""Fuzzing: hostile input ends in a clear error, never a crash, a hang or a changed store.

Server side, against a real matcher on loopback: malformed upload headers,
bytes that are not protobuf at all, streams cut short, random CLK bytes. Every
call must end in a deliberate gRPC status (never UNKNOWN or INTERNAL, which
mean an exception escaped), within its deadline, with the data dir unchanged,
and the matcher must still answer afterwards.

Client side: random CSV exports and TOML mappings for the encoder. Every case
ends in an `InputError` naming the file, or in a successful encode with a
report - never another exception.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blindmatch.client.encoding.encode import encode_csv
from blindmatch.client.encoding.mapping import load_mapping
from blindmatch.client.encoding.schema import load_schema
from blindmatch.client.errors import InputError
from blindmatch.protos import blindmatch_pb2 as pb
from blindmatch.protos import blindmatch_pb2_grpc as pb_grpc
from tests.support import NORTH_MAP, PERSON_SCHEMA, Matcher

FUZZ = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
DELIBERATE = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def snapshot(data_dir: Path) -> dict[str, bytes]:
    """Uploads and their files: what a refused call must not change."""
    import sqlite3

    db = sqlite3.connect(f"file:{data_dir / 'blindmatch.sqlite'}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT id, sha256, current FROM uploads ORDER BY id").fetchall()
    finally:
        db.close()
    files = {p.name: p.read_bytes() for p in sorted((data_dir / "clks").iterdir())}
    return {"rows": repr(rows).encode(), **files}


@pytest.fixture
def fuzz_target(matcher: Matcher) -> Iterator[tuple[Matcher, str]]:
    with matcher.operator() as op:
        tokens = op.create_project("fuzz", ["north", "south"]).tokens
    yield matcher, tokens["north"]


def call_upload(matcher: Matcher, token: str, messages: list[pb.UploadRequest]) -> grpc.StatusCode:
    with grpc.insecure_channel(matcher.target) as channel:
        try:
            pb_grpc.MatcherStub(channel).Upload(
                iter(messages), metadata=[("authorization", f"Bearer {token}")], timeout=20
            )
        except grpc.RpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


def still_answers(matcher: Matcher, token: str) -> None:
    """The member is answered at once, and its (empty) index is as it was. (Not by
    DescribeProject: that is rate-limited per token, 20 then 1 a second, so 40 examples
    spent ~20 s in the client's back-off waiting for the limit, not for the matcher.)"""
    with matcher.member(token) as member:
        assert member.list_index("fuzz") == {}


names = st.one_of(st.just("fuzz"), st.text(max_size=80))
headers = st.builds(
    pb.UploadHeader,
    project=names,
    clk_bits=st.one_of(
        st.sampled_from([0, 8, 64, 512, 1024, 8192, 8256]), st.integers(0, 2**32 - 1)
    ),
    record_count=st.one_of(st.integers(0, 4), st.integers(0, 2**64 - 1)),
    fingerprint=st.one_of(st.binary(min_size=32, max_size=32), st.binary(max_size=40)),
    sha256=st.one_of(st.text("0123456789abcdef", min_size=64, max_size=64), st.text(max_size=70)),
    client_upload_id=st.one_of(st.just(""), st.text(max_size=140)),
)
bodies = st.lists(
    st.one_of(
        st.builds(pb.UploadRequest, clks=st.binary(max_size=600)),
        st.builds(pb.UploadRequest, header=headers),
        st.just(pb.UploadRequest()),
    ),
    max_size=5,
)


@FUZZ
@given(header=st.one_of(st.none(), headers), body=bodies)
def test_malformed_upload_streams_get_a_clear_status_and_change_nothing(
    fuzz_target: tuple[Matcher, str], header: pb.UploadHeader | None, body: list[pb.UploadRequest]
) -> None:
    matcher, token = fuzz_target
    before = snapshot(matcher.data_dir)
    messages = ([pb.UploadRequest(header=header)] if header is not None else []) + body
    code = call_upload(matcher, token, messages)
    if code == grpc.StatusCode.OK:  # only a well-formed upload may succeed
        assert header is not None and header.project == "fuzz"
        return
    assert code in DELIBERATE
    assert snapshot(matcher.data_dir) == before
    still_answers(matcher, token)


@FUZZ
@given(count=st.integers(1, 6), clks=st.binary(min_size=0, max_size=6 * 128), cut=st.integers(0, 7))
def test_random_clk_bytes_and_truncated_streams(
    fuzz_target: tuple[Matcher, str], count: int, clks: bytes, cut: int
) -> None:
    """A header promising `count` 1024-bit CLKs, then random bytes cut off anywhere."""
    matcher, token = fuzz_target
    before = snapshot(matcher.data_dir)
    header = pb.UploadHeader(
        project="fuzz",
        clk_bits=1024,
        record_count=count,
        fingerprint=bytes(32),
        sha256=hashlib.sha256(clks).hexdigest(),
    )
    pieces = [clks[i : i + 100] for i in range(0, len(clks), 100)][:cut]
    messages = [pb.UploadRequest(header=header)] + [pb.UploadRequest(clks=p) for p in pieces]
    code = call_upload(matcher, token, messages)
    whole = b"".join(pieces)
    if code == grpc.StatusCode.OK:
        assert whole == clks and len(clks) == count * 128
        return
    assert code in DELIBERATE
    assert snapshot(matcher.data_dir) == before


@FUZZ
@given(raw=st.lists(st.binary(max_size=300), min_size=0, max_size=4))
def test_bytes_that_are_not_protobuf_are_refused(
    fuzz_target: tuple[Matcher, str], raw: list[bytes]
) -> None:
    """Raw bytes on the Upload method: parse errors and garbage never stop the matcher."""
    matcher, token = fuzz_target
    before = snapshot(matcher.data_dir)
    with grpc.insecure_channel(matcher.target) as channel:
        upload = channel.stream_unary(
            "/blindmatch.v1.Matcher/Upload",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        with pytest.raises(grpc.RpcError) as err:
            upload(iter(raw), metadata=[("authorization", f"Bearer {token}")], timeout=20)
    # Undecodable bytes are refused by gRPC itself (INTERNAL, "Exception deserializing
    # request!") before our code runs; bytes that do decode reach our checks.
    assert err.value.code() in DELIBERATE | {grpc.StatusCode.INTERNAL}
    if err.value.code() == grpc.StatusCode.INTERNAL:
        assert "deserializ" in (err.value.details() or "")
    assert snapshot(matcher.data_dir) == before
    still_answers(matcher, token)


@FUZZ
@given(
    project=names,
    run_id=st.text(max_size=40),
    token=st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60),
)
def test_malformed_run_and_results_requests(
    fuzz_target: tuple[Matcher, str], project: str, run_id: str, token: str
) -> None:
    matcher, good = fuzz_target
    before = snapshot(matcher.data_dir)
    with grpc.insecure_channel(matcher.target) as channel:
        stub = pb_grpc.MatcherStub(channel)
        for auth in (good, token):
            md = [("authorization", f"Bearer {auth}")]
            calls = [
                lambda md=md: stub.StartRun(pb.StartRunRequest(project=project), metadata=md),
                lambda md=md: list(
                    stub.WatchRun(pb.WatchRunRequest(project=project, run_id=run_id), metadata=md)
                ),
                lambda md=md: list(
                    stub.GetResults(pb.ResultsRequest(project=project), metadata=md, timeout=20)
                ),
            ]
            for call in calls:
                try:
                    call()
                except grpc.RpcError as exc:
                    assert exc.code() in DELIBERATE, exc
    assert snapshot(matcher.data_dir) == before


# -- the client's encoder --------------------------------------------------------------------

CSV_ALPHABET = st.sampled_from(list("abcXYZ019 ,;\"'\n\r\t\\/-é\x00\ufeff"))
HEADER_LINE = "URN,Forenames,Surname,DOB,Sex,Postcode\n"


@pytest.fixture(scope="module")
def schema() -> object:
    return load_schema(PERSON_SCHEMA)


@FUZZ
@given(
    body=st.one_of(
        st.text(CSV_ALPHABET, max_size=400),
        st.binary(max_size=300).map(lambda b: b.decode("latin-1")),
    ),
    with_header=st.booleans(),
)
def test_hostile_csv_ends_in_an_input_error_or_an_encode_with_a_report(
    tmp_path_factory: pytest.TempPathFactory, schema: object, body: str, with_header: bool
) -> None:
    tmp = tmp_path_factory.mktemp("csv")
    data = tmp / "export.csv"
    data.write_bytes(((HEADER_LINE if with_header else "") + body).encode("utf-8", "surrogatepass"))
    mapping_path = tmp / "map.toml"
    mapping_path.write_text(NORTH_MAP, encoding="utf-8")
    mapping = load_mapping(mapping_path, schema)  # type: ignore[arg-type]
    try:
        result = encode_csv(data, schema, mapping, b"secret")  # type: ignore[arg-type]
    except InputError as exc:
        assert str(data) in str(exc)
        return
    assert result.report.rows_encoded == len(result.ids)
    assert result.report.render()


toml_values = st.recursive(
    st.one_of(st.text(max_size=12), st.integers(), st.booleans(), st.floats(allow_nan=False)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


def toml_dump(value: object) -> str:
    """A tiny TOML writer for fuzzed values (strings quoted, tables inline)."""
    import json

    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_dump(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(toml_dump(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)


@FUZZ
@given(
    text=st.one_of(
        st.text(max_size=200),
        st.dictionaries(
            st.sampled_from(["id", "delimiter", "fields", "extra"]), toml_values, max_size=4
        ).map(lambda d: "\n".join(f"{k} = {toml_dump(v)}" for k, v in d.items())),
        st.dictionaries(
            st.sampled_from(["given_name", "surname", "dob", "sex", "postcode", "zzz"]),
            toml_values,
            max_size=5,
        ).map(
            lambda f: (
                'id = "URN"\n[fields]\n' + "\n".join(f"{k} = {toml_dump(v)}" for k, v in f.items())
            )
        ),
    )
)
def test_hostile_toml_mappings_end_in_an_input_error_or_a_mapping(
    tmp_path_factory: pytest.TempPathFactory, schema: object, text: str
) -> None:
    path = tmp_path_factory.mktemp("toml") / "map.toml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        mapping = load_mapping(path, schema)  # type: ignore[arg-type]
    except InputError as exc:
        assert str(path) in str(exc)
        return
    assert mapping.id_column
