"""`project show --encoded`: whether an ENCODED folder may be uploaded to the project, as
`upload` would take it: its encoding's fingerprint id against the project's, and (since
issue 18) the project's mode against how the folder was encoded (`--two-server` or not).
With `--json` the verdict is a key of the one JSON object `show` prints (walk2s,
2026-12-06: it was a line of text after the JSON, so standard output did not parse)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    from blindmatch.client.remote.model import ProjectInfo


@dataclass(frozen=True)
class EncodedCheck:
    """What `show --encoded` says of a folder, and its exit status."""

    folder: str
    fingerprint_id: str
    upload: str  # "as is", "with --clk" (a --two-server folder, a CLK project) or "refused"
    says: str  # the line `show` prints
    status: int  # 1: do not upload it

    def as_dict(self) -> dict[str, str]:
        return {"folder": self.folder, "fingerprint_id": self.fingerprint_id,
                "upload": self.upload, "says": self.says}  # fmt: skip


def compare_encoded(info: ProjectInfo, path: Path) -> int:
    """Say whether an ENCODED folder may be uploaded to the project; 1 when it may not."""
    check = check_encoded(info, path)
    print(check.says)
    return check.status


def check_encoded(info: ProjectInfo, path: Path) -> EncodedCheck:
    """Whether an ENCODED folder may be uploaded to the project, and the line saying so."""
    from blindmatch.client.encoding.encoded import read_encoded
    from blindmatch.protos.wire import fingerprint_id

    encoded = read_encoded(path, verify=False)
    mine = fingerprint_id(encoded.fingerprint)
    same_bits = encoded.clk_bits == info.clk_bits or info.mode == "two-server"  # no CLKs there
    if info.fingerprint_id and not (mine == info.fingerprint_id and same_bits):
        return EncodedCheck(
            str(path), mine, "refused",
            f"{path}: fingerprint id {mine} ({encoded.clk_bits}-bit CLKs) differs from the "
            f"project's {info.fingerprint_id} ({info.clk_bits}-bit, of "
            f"{info.fingerprint_from}'s upload): it was encoded with another schema or "
            "secret; do not upload it. Compare your schema file's SHA-256 and your secret's "
            "id with that member's.",
            1,
        )  # fmt: skip
    refused = _refused_by_mode(info, path)  # as `upload` refuses it (issue 18)
    if refused is not None:
        two_server = info.mode == "two-server"  # (a CLK project's takes it with --clk)
        says = f"{path}: fingerprint id {mine}, {refused}"
        return EncodedCheck(str(path), mine, "refused" if two_server else "with --clk", says,
                            int(two_server))  # fmt: skip
    if not info.fingerprint_id:
        says = f"{path}: fingerprint id {mine}; nothing uploaded yet, so yours will set it."
        return EncodedCheck(str(path), mine, "as is", says, 0)
    says = f"{path}: fingerprint id {mine}, the project's: it may be uploaded."
    return EncodedCheck(str(path), mine, "as is", says, 0)


def _refused_by_mode(info: ProjectInfo, path: Path) -> str | None:
    """Why `upload` refuses the folder in this project's mode, and the way on; None where
    the mode takes it as it is."""
    from blindmatch.client.encoding.sharing import SHARED_FOLDER

    shared = (path / SHARED_FOLDER).is_dir()
    if info.mode == "two-server" and not shared:
        return (
            f"but {info.project} runs in two-server mode and the folder was encoded without "
            "--two-server: `upload` refuses it, sending nothing. Encode with `blindmatch "
            "encode ... --two-server` and check that folder."
        )
    if info.mode != "two-server" and shared:
        return (
            f"but it was encoded --two-server and {info.project} is a CLK project: `upload` "
            "sends it only with --clk, and then the matcher holds your CLKs (docs/privacy.md)."
        )
    return None
