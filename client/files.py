"""Files the client writes for the user, atomically: the old file or the whole new one;
and the CSV files it reads from the user (`read_csv_lines`, `iter_csv_lines`).

Each is written to a temporary file beside it and renamed into place. The temporary file
is made readable and writable by its owner only (as `tempfile.mkstemp` makes one), so the
new file is too, from the first byte (an operator token, say, is never readable by others).
"""

from __future__ import annotations

import csv
import errno
import os
import secrets
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from blindmatch.client.errors import InputError
from blindmatch.client.words import word

# A temporary file's opening: made here or refused, never a link followed.
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def read_csv_lines(path: Path, required: Sequence[str]) -> list[tuple[int, dict[str, str]]]:
    """A CSV file's rows by column name (the header's names trimmed), each with the line of
    the file it starts on as an editor numbers them (the header is line 1; blank lines, skipped,
    are counted), for errors naming a row; an `InputError` naming the file when it is missing,
    not UTF-8, or lacks one of the `required` columns. A UTF-8 byte-order mark (Excel's "CSV
    UTF-8" writes one) is not part of the first column's name. A row shorter than the header
    has `None` for the columns it lacks."""
    return list(iter_csv_lines(path, required))


def iter_csv_lines(path: Path, required: Sequence[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """`read_csv_lines`, a row at a time (a large file is never held whole)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in reader.fieldnames or []]
            missing = [c for c in required if c not in header]
            if missing:
                raise InputError(
                    f"{path}: {word(len(missing), 'column')} {', '.join(missing)} missing; the "
                    f"header must name {','.join(required)}, in any order (it is "
                    f"{','.join(header) or 'empty'})"
                    + _other_separator(header)
                    + _other_kind(header, required)
                )
            while True:  # DictReader's rows, but it would not say which line each starts on
                line = reader.reader.line_num + 1
                try:
                    values = next(reader.reader)
                except StopIteration:
                    return
                if values:
                    row: dict[Any, Any] = dict(zip(header, values, strict=False))
                    row.update(dict.fromkeys(header[len(values) :]))
                    if len(values) > len(header):
                        row[None] = values[len(header) :]
                    yield line, row
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a UTF-8 CSV file") from None


# The CSV files blindmatch reads, by the header each starts with: one given for another (a
# results file as --truth, say) is named as what it looks like.
_KINDS = (
    (("member", "record_id", "entity_id"), "a truth file (member,record_id,entity_id), which "
     "`evaluate` and `report` take as --truth"),
    (("record_id", "partner"), "a results file (record_id,partner, as `blindmatch results` "
     "writes it), which `evaluate` takes as --results and `request` as --hits"),
)  # fmt: skip


def _other_kind(header: list[str], required: Sequence[str]) -> str:
    """A hint when the header is that of another of blindmatch's CSV files."""
    for columns, kind in _KINDS:
        if tuple(header[: len(columns)]) == columns and tuple(required) != columns:
            return f"; it looks like {kind}"
    return ""


def _other_separator(header: list[str]) -> str:
    """A hint when a header read as one column is split by another separator (a spreadsheet
    saving `member;record_id;entity_id`): these files are comma-separated."""
    if len(header) != 1:
        return ""
    for sep, name in ((";", "';'"), ("\t", "tab"), ("|", "'|'")):
        if sep in header[0]:
            return f"; the file looks {name}-separated: save it comma-separated"
    return ""


def write_csv(
    path: str | Path,
    header: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    replace: bool = True,
    lineterminator: str = "\n",
) -> int:
    """Write a CSV atomically: the old file or the whole new one, never half. Each row is
    written as `rows` yields it (`atomic_open`), so a large CSV (a results file, an audit
    export) is never held whole in memory; how many rows were written. Before 2026-12-07
    the CSV was made in memory first, twice over (its text, then its bytes)."""
    with atomic_open(path, replace=replace, encoding="utf-8") as fh:
        return write_csv_rows(fh, header, rows, lineterminator=lineterminator)


def write_csv_rows(
    fh: IO[str], header: Sequence[str], rows: Iterable[Sequence[object]], *, lineterminator: str
) -> int:
    """`header` and then each of `rows` as CSV lines to `fh` (a file `atomic_open` gave, or
    standard output), a row at a time; how many rows."""
    writer = csv.writer(fh, lineterminator=lineterminator)
    writer.writerow(header)
    count = 0
    for count, row in enumerate(rows, 1):  # noqa: B007 (the last is the count)
        writer.writerow(row)
    return count


def write_chunks(path: str | Path, chunks: Iterable[str]) -> None:
    """Write a text file atomically from its parts (a page, JSON lines), each written as
    `chunks` yields it: the old file or the whole new one, never half."""
    with atomic_open(path, encoding="utf-8") as fh:
        fh.writelines(chunks)


def check_writable(path: str | Path) -> Path:
    """`path`, refused as `write_text` would refuse it: a folder, or a file whose folder
    cannot be made or written in (a file where a folder is needed, no permission, a
    read-only file system). Called before a call to the matcher (or S1, S2, the combiner)
    whose answer is written there, so that none is asked (and audited, or counted, or
    spent) for an answer that could not be kept."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give the name of a file to write")
    folder = path.absolute().parent
    while not folder.exists() and folder != folder.parent:  # made by `write_text`
        folder = folder.parent
    if not folder.is_dir():
        raise InputError(f"{path}: {folder} is not a folder; give a file in a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"{path}: cannot write in {folder} (permission denied or read-only)")
    return path


def write_text(path: str | Path, text: str) -> None:
    """Write a text file atomically: the old file or the whole new one, never half."""
    write_bytes(path, text.encode("utf-8"))


def write_bytes(path: str | Path, data: bytes, *, replace: bool = True, mode: int = 0o600) -> None:
    """Write a file atomically: the old file or the whole new one, never half (`atomic_open`
    with `data` written at once)."""
    with atomic_open(path, replace=replace, mode=mode) as fh:
        fh.write(data)


@contextmanager
def atomic_open(
    path: str | Path, *, replace: bool = True, mode: int = 0o600, encoding: str | None = None
) -> Iterator[IO[Any]]:
    """A file to write `path` with as the block goes, atomically: the old file or the whole
    new one, never half. Written to a temporary file beside `path` (a name of its own,
    `.NAME.XXXXXXXXXXXX`, opened as `tempfile.mkstemp` opens one), fsynced and renamed into
    place when the block ends; so a large file (`two-server run`'s links) is never held
    whole in memory. Binary, or text in `encoding` (newlines as written: `csv`'s own).
    Whatever ends the block or the write part-way (a full disk, an error in the block;
    Ctrl-C, or SIGTERM in a command that takes it so, cli/errors.py `ends_at_sigterm`)
    deletes the temporary file: it is named before it is made, so that one made just as the
    signal came is deleted too. Not `replace`: a file already there is refused
    (`FileExistsError`, as `O_EXCL` refuses it) and left as it is; the new one is linked
    into place, or, where the file system has no links (FAT), put in the place its opening
    with `O_EXCL` took. `mode`: the new file's, less the umask's bits (owner-only unless
    asked: a certificate, for others to read). An `OSError` that names no file (a write's:
    a full disk, a file too large) names `path`, so that the command says which file."""
    path = check_writable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:  # a name no file has (as `tempfile.mkstemp` finds one)
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}"
        try:
            fd = os.open(tmp, _NEW_FILE, mode)
        except FileExistsError:
            continue  # another's: left as it is
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM (`Terminated`), perhaps once it was made
            tmp.unlink(missing_ok=True)
            raise
        break
    try:
        if encoding is None:
            fh: IO[Any] = os.fdopen(fd, "wb")
        else:
            fh = os.fdopen(fd, "w", encoding=encoding, newline="")
        with fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            _link_new(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = str(path)  # a write's (a full disk, a file too large): said as path's
        raise


def _link_new(tmp: Path, path: Path) -> None:
    """`tmp` moved to `path`, where no file is; refused (`FileExistsError`) where one is."""
    try:
        os.link(tmp, path, follow_symlinks=False)
        tmp.unlink()
        return
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
    os.close(os.open(path, _NEW_FILE, 0o600))  # the name taken (or refused), empty ...
    try:
        os.replace(tmp, path)  # ... until the whole file is put there
    except BaseException:
        path.unlink(missing_ok=True)  # (made above, by this call)
        raise
