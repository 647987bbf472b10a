"""Fail when the generated modules beside blindmatch.proto are stale.

Run as `python -m blindmatch.protos.freshness` (CI does, through `make check-protos`). It
regenerates into a temporary folder and compares byte for byte.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
GENERATED = ("blindmatch_pb2.py", "blindmatch_pb2.pyi", "blindmatch_pb2_grpc.py")


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "protoc",
            f"-I{ROOT}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            str(ROOT / "blindmatch" / "protos" / "blindmatch.proto"),
        ]
        if protoc.main(args) != 0:
            sys.stderr.write("protoc failed on blindmatch/protos/blindmatch.proto\n")
            return 1
        stale = [
            name
            for name in GENERATED
            if (Path(tmp) / "blindmatch" / "protos" / name).read_bytes()
            != (ROOT / "protos" / name).read_bytes()
        ]
    if stale:
        sys.stderr.write(
            f"generated code is stale: {', '.join(stale)}; "
            "run `make protos` and commit the result\n"
        )
        return 1
    sys.stdout.write("generated protobuf code is up to date\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
