"""Shared fixtures: a real matcher on a free loopback port, and small member inputs."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from blindmatch.client.api import MatcherClient, ProjectTokens
from blindmatch.matcher.server import RunningServer, create_server

ROOT = Path(__file__).resolve().parent.parent
PERSON_SCHEMA = ROOT / "schemas" / "person-uk.json"
# Opt-in: field-level filters scored with Fellegi-Sunter; leaks value frequencies.
FIELD_LEVEL_SCHEMA = ROOT / "schemas" / "person-uk-field-level.json"
# The opt-in schema with a fallback CLK without the date of birth (the default until issue 18).
FALLBACK_SCHEMA = ROOT / "schemas" / "person-uk-fallback.json"
FEBRL4 = ROOT / "tests" / "data" / "febrl4"

ADMIN_TOKEN = "bm_admin_test_" + secrets.token_hex(8)
# A secret that passes `encode`'s strength rule (client.sharedsecret), fixed so runs repeat.
STRONG_SECRET = "5f0c9e2a7b41d8e36a9c04b7f21e8d5390ab6c7e4f1d2a8b9c3e6f70a1b2c3d4"


@dataclass
class Matcher:
    """A running matcher: where it listens, its data dir, and the operator token."""

    server: RunningServer
    data_dir: Path
    admin_token: str

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def operator(self) -> MatcherClient:
        return MatcherClient(self.target, self.admin_token)

    def member(self, token: str) -> MatcherClient:
        return MatcherClient(self.target, token)


@pytest.fixture
def matcher(tmp_path: Path) -> Iterator[Matcher]:
    data_dir = tmp_path / "matcher-data"
    server = create_server("127.0.0.1:0", data_dir, ADMIN_TOKEN, workers=2)
    try:
        yield Matcher(server, data_dir, ADMIN_TOKEN)
    finally:
        server.stop(grace=None)


@pytest.fixture
def project(matcher: Matcher) -> ProjectTokens:
    """A two-member project, 'north' and 'south', at the default disclosure."""
    with matcher.operator() as op:
        return op.create_project("trial", ["north", "south"])


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "linkage.secret"
    path.write_text(STRONG_SECRET + "\n")  # as `blindmatch secret new` writes one
    return path


NORTH_CSV = """URN,Forenames,Surname,DOB,Sex,Postcode
N1,Élodie,O'Brien,02/03/1985,F,SW1A 1AA
N2,James,Smith,17/11/1990,M,M1 2AB
N3,Aoife,Byrne,30/02/1970,F,LS6 3DR
N4,Zoltán,Kovács,05/05/1965,M,CF10 1AA
N5,Grace,Hughes,12/12/2001,F,EH1 9ZZ
"""

SOUTH_CSV = """PersonID,FIRST_NAME,LAST_NAME,BIRTH_DATE,GENDER,POST_CODE
S-10,ELODIE,OBRIEN,1985-03-02,Female,sw1a1aa
S-11,ZOLTAN,KOVACS,1965-05-05,Male,cf101aa
S-12,PETER,NOWAK,1979-08-14,Male,b338tt
S-13,GRACE,HUGHES,2001-12-12,Female,eh19zz
"""

NORTH_MAP = """id = "URN"
[fields]
given_name = "Forenames"
surname = "Surname"
dob = { column = "DOB", date_format = "%d/%m/%Y" }
sex = "Sex"
postcode = "Postcode"
"""

SOUTH_MAP = """id = "PersonID"
[fields]
given_name = "FIRST_NAME"
surname = "LAST_NAME"
dob = { column = "BIRTH_DATE", date_format = "%Y-%m-%d" }
sex = "GENDER"
postcode = "POST_CODE"
"""


@dataclass
class Org:
    csv: Path
    mapping: Path


@pytest.fixture
def orgs(tmp_path: Path) -> dict[str, Org]:
    """Two small exports of overlapping people, written in different conventions."""
    out = {}
    for name, data, mapping in (("north", NORTH_CSV, NORTH_MAP), ("south", SOUTH_CSV, SOUTH_MAP)):
        csv_path = tmp_path / f"{name}.csv"
        csv_path.write_text(data, encoding="utf-8")
        map_path = tmp_path / f"{name}.toml"
        map_path.write_text(mapping, encoding="utf-8")
        out[name] = Org(csv_path, map_path)
    return out
