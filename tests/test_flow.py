"""The whole flow against a real matcher on loopback: CLI, client API and raw RPCs."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from blindmatch.cli import main
from blindmatch.client import MatcherClient, ProjectTokens
from blindmatch.client.encoding.encoded import Encoded, read_encoded, write_encoded
from blindmatch.client.errors import AuthError, NotFoundError, RejectedError
from blindmatch.matcher.server import create_server
from blindmatch.protos import blindmatch_pb2 as pb
from blindmatch.protos import blindmatch_pb2_grpc as pb_grpc
from tests.support import PERSON_SCHEMA, Matcher, Org, encode, uploaded_and_run


def read_csv(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh))


@pytest.fixture
def encoded(orgs: dict[str, Org], tmp_path: Path) -> dict[str, Encoded]:
    return {name: encode(org, tmp_path / f"{name}.encoded") for name, org in orgs.items()}


def cli(matcher: Matcher, *args: str) -> int:
    return main([*args, "--server", matcher.target, "--quiet"])


# -- the documented CLI flow --------------------------------------------------------


def test_cli_flow_finds_the_shared_people(
    matcher: Matcher,
    orgs: dict[str, Org],
    secret_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import json

    monkeypatch.setenv("BLINDMATCH_ADMIN_TOKEN", matcher.admin_token)
    assert cli(matcher, "project", "create", "trial", "--members", "north,south", "--json") == 0
    created = json.loads(capsys.readouterr().out)
    assert created["project"] == "trial"
    tokens = created["tokens"]
    assert set(tokens) == {"north", "south"}

    for name, org in orgs.items():
        out = tmp_path / f"{name}.encoded"
        assert (
            main(
                [
                    "encode",
                    str(org.csv),
                    "--schema",
                    str(PERSON_SCHEMA),
                    "--secret-file",
                    str(secret_file),
                    "--mapping",
                    str(org.mapping),
                    "--out",
                    str(out),
                ]
            )
            == 0
        )
        assert cli(matcher, "upload", str(out), "--project", "trial", "--token", tokens[name]) == 0
    capsys.readouterr()

    monkeypatch.setenv("BLINDMATCH_TOKEN", tokens["south"])  # --token may come from the env
    assert main(["run", "--project", "trial", "--server", matcher.target]) == 0
    assert "3 of your records are held by a partner" in capsys.readouterr().out

    for name in orgs:
        hits = tmp_path / f"{name}-hits.csv"
        args = ["results", "--project", "trial", "--token", tokens[name]]
        args += ["--encoded", str(tmp_path / f"{name}.encoded"), "--out", str(hits)]
        assert cli(matcher, *args) == 0
    assert read_csv(tmp_path / "north-hits.csv") == [
        ["record_id", "partner"],
        ["N1", "south"],
        ["N4", "south"],
        ["N5", "south"],
    ]
    assert read_csv(tmp_path / "south-hits.csv") == [
        ["record_id", "partner"],
        ["S-10", "north"],
        ["S-11", "north"],
        ["S-13", "north"],
    ]


# -- disclosure levels ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("level", "header", "north_rows"),
    [
        ("count", ["partner", "shared_subjects"], [["south", "3"]]),
        ("hits", ["record_id", "partner"], [["N1", "south"], ["N4", "south"], ["N5", "south"]]),
        (
            "mapping",
            ["record_id", "partner", "partner_row"],
            [["N1", "south", "0"], ["N4", "south", "1"], ["N5", "south", "3"]],
        ),
    ],
)
def test_results_follow_the_disclosure_level(
    matcher: Matcher,
    encoded: dict[str, Encoded],
    tmp_path: Path,
    level: str,
    header: list[str],
    north_rows: list[list[str]],
) -> None:
    with matcher.operator() as op:
        project = op.create_project(f"level-{level}", ["north", "south"], disclosure=level)
    uploaded_and_run(matcher, project, encoded)
    out = tmp_path / "north.csv"
    args = ["results", "--project", project.project, "--token", project.tokens["north"]]
    # `--out` a folder: refused before the fetch (before, the matcher disclosed the results,
    # audited, and then the CSV could not be written).
    assert cli(matcher, *args, "--encoded", str(encoded["north"].path), "--out",
               str(tmp_path)) == 2  # fmt: skip
    with matcher.operator() as op:
        assert not [e for e in op.audit(project.project) if e["action"] == "results.disclose"]
    assert cli(matcher, *args, "--encoded", str(encoded["north"].path), "--out", str(out)) == 0
    assert read_csv(out) == [header, *north_rows]


def test_scores_disclosure_gives_similarities(
    matcher: Matcher, encoded: dict[str, Encoded]
) -> None:
    with matcher.operator() as op:
        project = op.create_project("research", ["north", "south"], disclosure="scores")
    uploaded_and_run(matcher, project, encoded)
    with matcher.member(project.tokens["south"]) as member:
        results = member.results("research")
    assert [(h.row, h.partner, h.partner_row) for h in results.hits] == [
        (0, "north", 0),
        (1, "north", 3),
        (3, "north", 4),
    ]
    assert all(0.8 <= h.score <= 1.0 for h in results.hits)


# -- who may do what --------------------------------------------------------------------


def test_a_wrong_token_is_refused(
    matcher: Matcher, project: ProjectTokens, encoded: dict[str, Encoded]
) -> None:
    with matcher.member("bm_not-a-real-token") as member, pytest.raises(AuthError) as err:
        member.upload("trial", encoded["north"])
    # Refused before the upload's first message is read, so before it names its project.
    assert "the token is not valid for any project" in str(err.value)
    assert "UNAUTHENTICATED" in str(err.value)
    with matcher.member("bm_not-a-real-token") as member, pytest.raises(AuthError) as err:
        member.describe("trial")
    assert "the token is not valid for project 'trial'" in str(err.value)


def test_a_wrong_token_exits_3_from_the_cli(
    matcher: Matcher,
    project: ProjectTokens,
    encoded: dict[str, Encoded],
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = cli(
        matcher, "upload", str(encoded["north"].path), "--project", "trial", "--token", "bm_x"
    )
    assert code == 3
    # `upload` asks the project's settings before sending (issue 18): refused there, naming it.
    assert capsys.readouterr().err.startswith("Error: the token is not valid for project 'trial'")


def test_another_projects_token_is_refused(matcher: Matcher, project: ProjectTokens) -> None:
    with matcher.operator() as op:
        other = op.create_project("other", ["east", "west"])
    with (
        matcher.member(other.tokens["east"]) as member,
        pytest.raises(AuthError, match="PERMISSION_DENIED"),
    ):
        member.describe("trial")


def test_only_the_operator_creates_projects(matcher: Matcher, project: ProjectTokens) -> None:
    with matcher.member(project.tokens["north"]) as member, pytest.raises(AuthError):
        member.create_project("mine", ["a", "b"])
    with MatcherClient(matcher.target) as anonymous, pytest.raises(AuthError, match="no token"):
        anonymous.create_project("mine", ["a", "b"])


def test_unknown_project(matcher: Matcher, project: ProjectTokens) -> None:
    # A member is told what it is told of another's project: nothing of whether it exists.
    with matcher.member(project.tokens["north"]) as member, pytest.raises(AuthError) as refused:
        member.describe("no-such-project")
    assert "this token does not belong to project 'no-such-project'" in str(refused.value)
    with matcher.operator() as op, pytest.raises(NotFoundError):  # the operator is told
        op.list_projects("no-such-project")


def test_a_member_only_ever_sees_its_own_rows(
    matcher: Matcher, project: ProjectTokens, encoded: dict[str, Encoded]
) -> None:
    uploaded_and_run(matcher, project, encoded)
    with matcher.member(project.tokens["south"]) as member:
        results = member.results("trial")
    assert results.upload_sha256 == encoded["south"].sha256
    assert results.record_count == 4
    assert {h.partner for h in results.hits} == {"north"}


# -- bad requests leave nothing behind -----------------------------------------------------


def stored_files(matcher: Matcher) -> list[Path]:
    return sorted((matcher.data_dir / "clks").iterdir()) + sorted(
        (matcher.data_dir / "tmp").iterdir()
    )


def raw_upload(matcher: Matcher, token: str, header: pb.UploadHeader, chunks: list[bytes]) -> None:
    with grpc.insecure_channel(matcher.target) as channel:
        stub = pb_grpc.MatcherStub(channel)
        messages = [pb.UploadRequest(header=header)] + [pb.UploadRequest(clks=c) for c in chunks]
        stub.Upload(iter(messages), metadata=[("authorization", f"Bearer {token}")])


def test_an_upload_with_the_wrong_clk_length_is_refused(
    matcher: Matcher, project: ProjectTokens, encoded: dict[str, Encoded]
) -> None:
    with matcher.member(project.tokens["north"]) as member:
        member.upload("trial", encoded["north"])
    before = stored_files(matcher)
    clks = bytes(64 * 3)  # three 512-bit CLKs in a 2048-bit project
    header = pb.UploadHeader(
        project="trial",
        clk_bits=512,
        record_count=3,
        fingerprint=encoded["north"].fingerprint,
        sha256=hashlib.sha256(clks).hexdigest(),
    )
    with pytest.raises(grpc.RpcError) as err:
        raw_upload(matcher, project.tokens["south"], header, [clks])
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert (
        "CLKs of 512 bits, but north's upload (the earliest held in this project) has 2048-bit"
        in str(err.value.details())
    )
    assert stored_files(matcher) == before


@pytest.mark.parametrize("fallback_bits", [100, 2048, 4096])
def test_a_fallback_that_is_not_part_of_the_clk_is_refused(
    matcher: Matcher, project: ProjectTokens, fallback_bits: int
) -> None:
    clks = bytes(256 * 2)
    header = pb.UploadHeader(
        project="trial",
        clk_bits=2048,
        record_count=2,
        fingerprint=bytes(32),
        sha256=hashlib.sha256(clks).hexdigest(),
        fallback_bits=fallback_bits,
    )
    with pytest.raises(grpc.RpcError) as err:
        raw_upload(matcher, project.tokens["south"], header, [clks])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "header.fallback_bits" in str(err.value.details())


def test_bytes_that_are_not_whole_clks_are_refused(
    matcher: Matcher, project: ProjectTokens
) -> None:
    clks = bytes(128 * 2 + 5)
    header = pb.UploadHeader(
        project="trial",
        clk_bits=1024,
        record_count=2,
        fingerprint=bytes(32),
        sha256=hashlib.sha256(clks).hexdigest(),
    )
    with pytest.raises(grpc.RpcError) as err:
        raw_upload(matcher, project.tokens["north"], header, [clks])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a whole number of 1024-bit CLKs" in str(err.value.details())
    assert stored_files(matcher) == []


def test_a_truncated_upload_stores_nothing(matcher: Matcher, project: ProjectTokens) -> None:
    clks = bytes(128 * 2)
    header = pb.UploadHeader(
        project="trial",
        clk_bits=1024,
        record_count=5,
        fingerprint=bytes(32),
        sha256=hashlib.sha256(clks).hexdigest(),
    )
    with pytest.raises(grpc.RpcError) as err:
        raw_upload(matcher, project.tokens["north"], header, [clks])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "ended after 2 of 5 CLKs; nothing was stored" in str(err.value.details())
    assert stored_files(matcher) == []
    with matcher.member(project.tokens["north"]) as member:
        assert not any(m.uploaded for m in member.describe("trial").members)


def test_encodings_made_with_another_secret_are_refused(
    matcher: Matcher,
    project: ProjectTokens,
    orgs: dict[str, Org],
    tmp_path: Path,
    encoded: dict[str, Encoded],
) -> None:
    with matcher.member(project.tokens["north"]) as member:
        member.upload("trial", encoded["north"])
    before = stored_files(matcher)
    wrong = encode(orgs["south"], tmp_path / "wrong.encoded", secret=b"a different secret")
    with matcher.member(project.tokens["south"]) as member, pytest.raises(RejectedError) as err:
        member.upload("trial", wrong)
    assert "made with a different schema or secret" in str(err.value)
    assert "FAILED_PRECONDITION" in str(err.value)
    assert stored_files(matcher) == before


def test_results_before_any_run(
    matcher: Matcher,
    project: ProjectTokens,
    encoded: dict[str, Encoded],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "hits.csv"
    args = ["results", "--project", "trial", "--token", project.tokens["north"]]
    assert cli(matcher, *args, "--encoded", str(encoded["north"].path), "--out", str(out)) == 3
    assert "no finished run in this project yet" in capsys.readouterr().err
    assert not out.exists()


def test_a_run_waits_for_every_member(
    matcher: Matcher, project: ProjectTokens, encoded: dict[str, Encoded]
) -> None:
    with matcher.member(project.tokens["north"]) as member:
        member.upload("trial", encoded["north"])
        with pytest.raises(RejectedError, match="waiting for south"):
            member.start_run("trial")


def test_results_from_an_older_upload_are_not_joined_to_new_ids(
    matcher: Matcher,
    project: ProjectTokens,
    encoded: dict[str, Encoded],
    orgs: dict[str, Org],
    tmp_path: Path,
) -> None:
    uploaded_and_run(matcher, project, encoded)
    with open(orgs["north"].csv, "a", encoding="utf-8") as fh:
        fh.write("N6,New,Person,01/01/1999,F,OX4 1AA\n")
    newer = encode(orgs["north"], tmp_path / "north-newer.encoded")
    from blindmatch.client.errors import InputError
    from blindmatch.client.results import join_results

    with matcher.member(project.tokens["north"]) as member:
        results = member.results("trial")
    with pytest.raises(InputError, match="different upload than this encoded folder"):
        join_results(results, newer)


def test_reupload_replaces_the_members_data(
    matcher: Matcher,
    project: ProjectTokens,
    encoded: dict[str, Encoded],
    orgs: dict[str, Org],
    tmp_path: Path,
) -> None:
    with matcher.member(project.tokens["north"]) as member:
        member.upload("trial", encoded["north"])
        with open(orgs["north"].csv, "a", encoding="utf-8") as fh:
            fh.write("N6,New,Person,01/01/1999,F,OX4 1AA\n")
        member.upload("trial", encode(orgs["north"], tmp_path / "n2.encoded"))
        info = member.describe("trial")
    assert [(m.name, m.uploaded, m.record_count) for m in info.members] == [
        ("north", True, 6),
        ("south", False, 0),
    ]
    assert len(stored_files(matcher)) == 1  # the replaced upload's file is gone


# -- durability and service plumbing ------------------------------------------------------


@pytest.mark.server
def test_a_restart_loses_nothing_acknowledged(tmp_path: Path, encoded: dict[str, Encoded]) -> None:
    data_dir = tmp_path / "data"
    server = create_server("127.0.0.1:0", data_dir, "admin")
    target = f"127.0.0.1:{server.port}"
    with MatcherClient(target, "admin") as op:
        project = op.create_project("durable", ["north", "south"])
    for name, enc in encoded.items():
        with MatcherClient(target, project.tokens[name]) as member:
            member.upload("durable", enc)
    server.stop(grace=None)

    server = create_server("127.0.0.1:0", data_dir, "admin")
    target = f"127.0.0.1:{server.port}"
    try:
        with MatcherClient(target, project.tokens["north"]) as member:
            info = member.describe("durable")
            assert [m.record_count for m in info.members] == [5, 4]
            run = member.start_run("durable")
            assert list(member.watch_run("durable", run.run_id))[-1].groups == 3
            assert len(member.results("durable").hits) == 3
    finally:
        server.stop(grace=None)


def test_health_and_reflection_are_served(matcher: Matcher) -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with grpc.insecure_channel(matcher.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = health.Check(health_pb2.HealthCheckRequest(service="blindmatch.v1.Matcher"))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        response = next(stub.ServerReflectionInfo(iter([request])))
        names = {s.name for s in response.list_services_response.service}
        assert "blindmatch.v1.Matcher" in names


def test_read_encoded_checks_the_clks_against_the_manifest(encoded: dict[str, Encoded]) -> None:
    from blindmatch.client.errors import InputError

    path = encoded["north"].path / "clks.bin"
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match="sha256 differs"):
        read_encoded(encoded["north"].path)


def test_an_unknown_disclosure_level_is_invalid_argument(matcher: Matcher) -> None:
    with grpc.insecure_channel(matcher.target) as channel:
        stub = pb_grpc.MatcherStub(channel)
        request = pb.CreateProjectRequest(name="p", members=["a", "b"], disclosure=7)  # type: ignore[arg-type]
        with pytest.raises(grpc.RpcError) as err:
            stub.CreateProject(
                request, metadata=[("authorization", f"Bearer {matcher.admin_token}")]
            )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "disclosure: 7 is not a disclosure level" in str(err.value.details())


def test_long_clks_upload_in_messages_under_the_size_limit(
    matcher: Matcher, project: ProjectTokens, tmp_path: Path
) -> None:
    count = 17_000  # 17 MB of 8,192-bit CLKs: more than one 16 MiB gRPC message holds
    clks = bytes(range(256)) * 4 * count
    enc = write_encoded(
        tmp_path / "wide.encoded",
        clks=clks,
        clk_bits=8192,
        fingerprint=bytes(32),
        ids=[f"r{i}" for i in range(count)],
        report={},
        rule=None,
    )
    with matcher.member(project.tokens["north"]) as member:
        reply = member.upload("trial", enc)
    assert reply.record_count == count


def test_no_protobuf_type_leaves_the_remote_side() -> None:
    import typing

    from blindmatch.client.encoding.sharing import SharedUpload
    from blindmatch.client.remote import client, index, session

    def leaks(hint: object) -> list[str]:
        module = getattr(hint, "__module__", "") or ""
        found = [repr(hint)] if module.startswith(("blindmatch.protos", "google.protobuf")) else []
        return found + [x for arg in typing.get_args(hint) for x in leaks(arg)]

    public = [
        getattr(cls, name)
        for cls in (client.MatcherClient, session.QuerySession, session.AsyncQuerySession)
        for name in dir(cls)
        if not name.startswith("_") and callable(getattr(cls, name))
    ] + [index.sync_index, index.add_to_index, index.remove_from_index]
    # names the modules import for type checking only
    type_checking_names = {"QuerySession": session.QuerySession, "SharedUpload": SharedUpload}
    found = {
        f.__qualname__: leaks(
            typing.get_type_hints(f, {**f.__globals__, **type_checking_names})["return"]
        )
        for f in public
    }
    assert len(found) > 20
    assert {name: bad for name, bad in found.items() if bad} == {}
