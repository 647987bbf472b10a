"""Encode speed: `blindmatch encode` records/s beside clkhash alone, same schema and records.

    .venv/bin/python benchmarks/encodespeed.py                 # 20,000 records
    .venv/bin/python benchmarks/encodespeed.py --records 100000 --repeats 3

A realistic export (benchmarks/messy.py: north-police's columns and corruptions, N
people) is written to a temporary folder with its mapping, and encoded with the shipped
default schema (schemas/person-uk.json) and a benchmark secret four ways:

1. `blindmatch encode` as a member runs it (a subprocess; its CPU from getrusage, the
   pool of encoding processes it starts included): reading and normalising the CSV, the
   data-quality report, encoding, writing the ENCODED folder;
2. the same in process on one core (`client.encoding.encode.encode_csv`, max_workers=1):
   the per-core rate without the start-up;
3. clkhash alone: `clkhash.clk.generate_clks` on one core, on the very values blindmatch
   encodes (the normalised rows, in schema order), with the same schema: the anchor;
4. blindmatch's reading and normalising alone (`readcsv.read_rows`), and the fixed cost
   of a run (the schema-and-secret fingerprint, a deliberately slow scrypt), to show where
   the difference between 2 and 3 goes.

Rates are records per CPU second (time.process_time or getrusage) and, for the
subprocess, per wall second too; medians of --repeats; the load average is printed.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.exports import write_export
from benchmarks.messy import ORGS, export_row, population
from blindmatch.client.encoding.encode import encode_csv
from blindmatch.client.encoding.fingerprint import _stretched
from blindmatch.client.encoding.mapping import load_mapping
from blindmatch.client.encoding.readcsv import EncodeReport, read_rows
from blindmatch.client.encoding.schema import load_schema

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "schemas" / "person-uk.json"
SECRET = hashlib.sha256(b"blindmatch encode-speed benchmark").hexdigest().encode()  # public
STYLE = ORGS[0]  # north-police


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=2)
    args = parser.parse_args()
    from clkhash import clk as clk_encoder

    with tempfile.TemporaryDirectory(prefix="bm-encodespeed-") as tmp:
        folder = Path(tmp)
        rng = random.Random(args.seed)
        people = population(args.records, rng)
        rows = [export_row(STYLE, p, k, rng) for k, p in enumerate(people)]
        header = [STYLE.id_column, *STYLE.columns.values()]
        export = write_export(
            folder, STYLE.name, header, rows, STYLE.mapping_toml(), [0] * len(rows)
        )
        secret_file = folder / "linkage.secret"
        secret_file.write_bytes(SECRET)
        schema = load_schema(SCHEMA)
        mapping = load_mapping(export.mapping, schema)
        n = len(rows)
        load = os.getloadavg()[0]

        cli_cpu, cli_wall, inproc, alone, reading, fixed = [], [], [], [], [], []
        for k in range(args.repeats):  # interleaved
            out = folder / f"out{k}"
            before, t0 = children_cpu(), time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "blindmatch", "encode", str(export.csv),
                 "--schema", str(SCHEMA), "--secret-file", str(secret_file),
                 "--mapping", str(export.mapping), "--out", str(out), "-q"],
                check=True, stdout=subprocess.DEVNULL,
            )  # fmt: skip
            cli_wall.append(n / (time.perf_counter() - t0))
            cli_cpu.append(n / (children_cpu() - before))

            t0 = time.process_time()
            result = encode_csv(export.csv, schema, mapping, SECRET, max_workers=1)
            inproc.append(n / (time.process_time() - t0))

            t0 = time.process_time()
            _, values = read_rows(export.csv, schema, mapping, EncodeReport(source="bench"))
            reading.append(n / (time.process_time() - t0))

            _stretched.cache_clear()  # a CLI run pays it once; in process it is cached
            t0 = time.process_time()
            _stretched(SECRET)
            fixed.append(time.process_time() - t0)

            encoding_schema = schema.for_encoding()
            t0 = time.process_time()
            clks = clk_encoder.generate_clks(
                values, encoding_schema, SECRET, validate=False, max_workers=1
            )
            alone.append(n / (time.process_time() - t0))
        # The default schema's upload is each record's first CLK then its fallback CLK
        # (blindmatch.fallback): clkhash made the first, on the same values.
        width = result.clk_bits // 8
        first = (result.clk_bits - result.fallback_bits) // 8
        ours = bytes(memoryview(result.clks).cast("B"))
        ours_first = b"".join(ours[k * width : k * width + first] for k in range(n))
        same = b"".join(c.tobytes() for c in clks) == ours_first

    med = statistics.median
    print(f"machine: {os.cpu_count()} cores; load average {load:.1f} -> {os.getloadavg()[0]:.1f}")
    print(f"{n:,} realistic records ({STYLE.name}'s export), schema {SCHEMA.name}, "
          f"median of {args.repeats}")  # fmt: skip
    print(f"  blindmatch encode (CLI, all it does): {med(cli_cpu):,.0f} records/CPU-s, "
          f"{med(cli_wall):,.0f} records/s wall")  # fmt: skip
    print(f"  encode_csv in process, one core:     {med(inproc):,.0f} records/CPU-s")
    print(f"  clkhash generate_clks alone, one core: {med(alone):,.0f} records/CPU-s "
          f"(blindmatch in process {med(inproc) / med(alone):.2f}x, CLI "
          f"{med(cli_cpu) / med(alone):.2f}x of it)")  # fmt: skip
    print(f"  reading + normalising alone:          {med(reading):,.0f} records/CPU-s; "
          f"fixed cost a run (the fingerprint's scrypt): {med(fixed):.2f} CPU-s")  # fmt: skip
    print(f"  the same (first) CLKs from both: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
