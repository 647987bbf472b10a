"""An export's bytes as lines of text (`decoded_lines`), for `client.encoding.readcsv`'s
csv reader: in the mapping's encoding, with LF, CRLF or CR-only line ends; a workbook, a
UTF-16 file, or a UTF-8 file declared as a code page is refused, naming the fix. A cell
holding a C1 control character, which is what a cp1252 file read as latin-1 gives for its
curly quotes, dashes and some letters, is refused naming its row and column
(`refuse_control_characters`); text holding symbols no name or postcode has, which is what
a cp1250 (Central European) export read as cp1252 gives for its Polish and Czech letters,
is warned of (`OddSymbols`), and so is a word that only a cp1257 (Baltic) export read as cp1252
gives (`baltic_word`: 'Ðarûnas' for Šarūnas)."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from blindmatch.client.errors import InputError
from blindmatch.client.words import counted
from blindmatch.client.words import word as agrees

# Bytes read first to recognise a workbook, UTF-16, UTF-8 or CR-only line ends.
HEAD_BYTES = 1 << 16
# C1 control characters (U+0080-U+009F), which no text holds: latin-1 (and the other ISO 8859
# code pages) decode bytes 0x80-0x9F so, where cp1252, Excel's Windows code page, writes
# curly quotes, dashes, the euro sign and letters (S, Z, OE and Y with accents) with them.
C1_CONTROLS = re.compile("[\x80-\x9f]")


def decoded_lines(path: Path, encoding: str = "utf-8") -> Iterator[str]:
    """The file's lines as text, failing on the first line that is not in `encoding`.
    Lines end in LF, CRLF or (Excel for Mac's "CSV (Macintosh)") CR alone."""
    with open(path, "rb") as fh:
        head = fh.read(HEAD_BYTES)
        fh.seek(0)
        _refuse_binary(path, head)
        if not encoding.startswith("utf"):
            _refuse_utf8_as_code_page(path, head, encoding)
        # No LF in the first block but a CR: the file's lines end in CR alone.
        lines = _cr_lines(fh) if b"\r" in head and b"\n" not in head else fh
        for number, raw in enumerate(lines, start=1):
            try:
                text = raw.decode(encoding)
            except UnicodeDecodeError as exc:
                byte = raw[exc.start]
                hint = (
                    "save the export as UTF-8 CSV, or if it came from Excel, set "
                    'encoding = "cp1252" in the mapping'
                    if encoding == "utf-8"
                    else "check the mapping's encoding, or save the export as UTF-8 CSV"
                )
                seen = bytes([byte]).decode("cp1252", "replace") if encoding == "utf-8" else ""
                said = f", which cp1252 reads as {seen!r}" if seen.isprintable() and seen else ""
                raise InputError(
                    f"{path}: line {number} is not valid {_encoding_name(encoding)} "
                    f"(byte {exc.start + 1}: 0x{byte:02X}{said}); {hint}"
                ) from None
            if text.startswith("\ufeff"):  # line 1, or where exports were joined (cat a b)
                text = text[1:]
            yield text


def _cr_lines(fh: BinaryIO) -> Iterator[bytes]:
    """A file's lines when each ends in CR alone, each with its CR (as csv expects)."""
    pending = b""
    for block in iter(lambda: fh.read(1 << 20), b""):
        parts = (pending + block).split(b"\r")
        pending = parts.pop()
        yield from (part + b"\r" for part in parts)
    if pending:
        yield pending


def _refuse_binary(path: Path, head: bytes) -> None:
    """A workbook or a UTF-16 text file given as the export: said as such, with the fix,
    not as a decoding error on line 1 (whose usual hint, cp1252, would not help)."""
    if head.startswith(b"PK\x03\x04") or head.startswith(b"\xd0\xcf\x11\xe0"):
        raise InputError(
            f"{path}: this is a spreadsheet workbook (.xlsx or .xls), not a CSV file; in "
            'Excel use "Save As" and choose "CSV UTF-8 (Comma delimited)"'
        )
    if head.startswith((b"\xff\xfe", b"\xfe\xff")) or head.count(b"\x00") > len(head) // 4:
        raise InputError(
            f'{path}: the file is UTF-16 text (Excel\'s "Unicode Text" saves it so) or not '
            "text at all (it is full of NUL bytes); blindmatch reads UTF-8 or a single-byte code "
            'page such as cp1252: save the export as "CSV UTF-8 (Comma delimited)"'
        )


def _encoding_name(encoding: str) -> str:
    return {"utf-8": "UTF-8", "iso8859-1": "latin-1"}.get(encoding, encoding)


def _refuse_utf8_as_code_page(path: Path, head: bytes, encoding: str) -> None:
    """A file the mapping says is in a code page (cp1252, latin-1) whose non-ASCII bytes
    are all UTF-8: every byte is valid in a code page, so it would be read without an error
    and every accented name garbled ('Zoë' as 'ZoÃ«'). Refused, naming the line."""
    if head.isascii():
        return
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # Only a character cut by the end of the block read is no evidence against UTF-8.
        if exc.reason != "unexpected end of data" or exc.start < len(head) - 3:
            return
    line = next(n for n, raw in enumerate(head.split(b"\n"), start=1) if not raw.isascii())
    raise InputError(
        f'{path}: the mapping says encoding = "{encoding}", but the file is UTF-8 (line '
        f"{line} has UTF-8 characters, which {encoding} would read garbled); remove encoding "
        "from the mapping"
    )


def refuse_control_characters(
    path: Path, encoding: str, mapping_name: str, line: int, cells: Sequence[str],
    header: Sequence[str],
) -> None:  # fmt: skip
    """Refuse a row (`line`, 1 for the header) with a cell holding a C1 control character:
    the export is not in the mapping's `encoding` (a cp1252 file declared latin-1, most
    often). Dropped as punctuation, such a character would lose a letter (Š, ž, Œ) or join
    words silently; the error names the row, the column and the fix."""
    for at, cell in enumerate(cells):
        found = C1_CONTROLS.search(cell)
        if found is None:
            continue
        char = found.group()
        column = header[at] if at < len(header) and line > 1 else f"{at + 1}"
        where = "the header" if line == 1 else f"row {line}"
        if encoding.startswith("utf"):
            fix = (
                "the file was converted to UTF-8 from a code page as if it were latin-1; "
                "convert the original again from cp1252, or save the export as UTF-8 CSV"
            )
        else:
            fix = (
                f"the export is not {_encoding_name(encoding)}: if it came from Excel, set "
                f'encoding = "cp1252" in {mapping_name}'
            )
        raise InputError(
            f"{path}: {where}, column {column}: {cell.strip(' ')!r} holds U+{ord(char):04X}, a "
            f"control character no text holds{as_cp1252(char)}; {fix}"
        )


def as_cp1252(char: str) -> str:
    """What cp1252 writes with the byte of the C1 control `char`, said after it ("" for a
    byte cp1252 leaves unused)."""
    seen = char.encode("latin-1").decode("cp1252", "replace")
    byte = f"0x{ord(char):02X}"
    return f"; cp1252 (Excel's Windows code page) writes {seen!r} with byte {byte}" * (
        seen != "\ufffd"
    )


# Symbols no name or postcode holds (U+00A1-U+00BF, the multiplication and division signs):
# what cp1250 writes as letters reads so in cp1252 or latin-1 (ł as ³, Ł as £, ą as ¹, ż as ¿).
# Not the soft hyphen (U+00AD), which every code page writes with the same byte: an invisible
# break a word processor puts in a name ('Ann\u00adMarie'), dropped as punctuation is.
ODD_SYMBOLS = re.compile("[\u00a1-\u00ac\u00ae-\u00bf\u00d7\u00f7]")
# Any of these or an eth or thorn (`baltic_word`): one search of a row's text, the others
# only where it finds one.
SUSPECT = re.compile("[\x80-\x9f\u00a1-\u00bf\u00d7\u00f7\u00d0\u00de\u00f0\u00fe]")

# Names written in cp1252 hold ð or þ in Icelandic and Faroese, beside no other letters than
# theirs; in Vietnamese written with Ð for Đ, which starts a word (a syllable), beside
# Vietnamese vowels; and in Serbian and Croatian written with Ð and ð for Đ and đ, beside š and
# ž (cp1252 has them; cp1257 writes ˇ and ˛ with their bytes). cp1257 (Baltic) writes š and ž
# with the bytes cp1252 reads as ð and þ, and ū, ė, ī, ē, ņ, č, ą, ę, į with those of û, ë, î,
# ç, ò, è, à, æ, á: a word holding ð or þ beside a letter none of those has beside them is a
# Baltic name read as cp1252.
_NORDIC = frozenset("áéíóúýæöøðþšž")
_VIETNAMESE = frozenset("àáâãèéêìíòóôõùúý")
_WORDS = re.compile(r"[^\W\d_]+")


def baltic_word(text: str) -> bool:
    """Whether `text` holds a word (letters) with ð or þ that no name written in cp1252 has:
    one that cp1257 letters read as cp1252 give ('Ðarûnas', 'Kalniòð' for Šarūnas, Kalniņš).
    Most such words hold letters real names hold too ('Jânis' for Jānis): not noticed."""
    for word in _WORDS.findall(text.casefold()):
        if "ð" in word or "þ" in word:
            allowed = _NORDIC | _VIETNAMESE if word[0] == "ð" else _NORDIC
            if any(ch not in allowed and not ch.isascii() for ch in word):
                return True
    return False


class OddSymbols:
    """The text values of each field holding `ODD_SYMBOLS`, for one warning per field."""

    what = "symbols no name or postcode has"

    def __init__(self) -> None:
        self.found: dict[str, tuple[int, list[int], str]] = {}  # field -> (count, rows, first)

    def note(self, field: str, line: int, raw: str) -> None:
        count, rows, first = self.found.get(field, (0, [], raw.strip()))
        if len(rows) < 10:
            rows.append(line)
        self.found[field] = (count + 1, rows, first)

    def cause(self, encoding: str) -> str:
        if not encoding.startswith("utf"):
            return (
                f"letters of another code page read as {_encoding_name(encoding)}, such as "
                "cp1250 (Central European: ł as ³, Ł as £, ż as ¿); check the mapping's encoding"
            )
        return (
            "letters converted to UTF-8 from the wrong code page (cp1250's ł as ³, say); "
            "check how the export was made"
        )

    def warnings(self, encoding: str) -> list[str]:
        cause = self.cause(encoding)
        return [
            f"{field}: {counted(count, 'value')} {agrees(count, 'holds', 'hold')} {self.what}, "
            f"such as {first!r} (row{'s' * (len(rows) > 1)} {', '.join(map(str, rows))}"
            f"{', ...' * (count > len(rows))}): {cause}"
            for field, (count, rows, first) in self.found.items()
        ]


class BalticLetters(OddSymbols):
    """The text values of each field holding a `baltic_word`, for one warning per field."""

    what = "letters together that no name written in cp1252 has"

    def cause(self, encoding: str) -> str:
        if not encoding.startswith("utf"):
            return (
                f"letters of a Baltic code page read as {_encoding_name(encoding)}: cp1257 "
                "(Lithuanian, Latvian: š as ð, ž as þ, ū as û, ė as ë, ņ as ò); if the export "
                'is Baltic, set encoding = "cp1257" in the mapping'
            )
        return (
            "letters converted to UTF-8 from the wrong code page (cp1257's š as ð, say); "
            "check how the export was made"
        )
