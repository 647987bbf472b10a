"""Notes written inside name cells: "Smith (nee Jones)", "SMITH NEE JONES", "John (Jack)",
"Smith [deceased]", "Smith aka Jones". UK police and retail exports put them there; read as
part of the name they would encode "smithneejones", which matches neither the Smith nor the
Jones record of the same woman elsewhere.

In a name field (`is_name_field`) a bracketed part (`(...)`, `[...]`, or an opening bracket
left unclosed to the end) is a note, and so is everything from a separating keyword (`nee`,
`née`, `formerly`, `aka`, `a.k.a.`, `alias`: a whole word, in any case, accents folded) to
the end; the name is what is left. A keyword as the first word is a name, not a separator
("Nee", "Alias Smith" stay as they are), and so are names holding those letters inside a word
("Kneeland", "Renee", "Akamatsu"). A generational suffix ending a name of more than one word
(`Jr`, `Jnr`, `Sr`, `Snr`, `II`, `III`, `IV`, with or without a dot: "SMITH JNR", "John Smith
Jr.") is a note too, not the surname, and so is one right after the surname of a full name
written surname first ("SMITH JNR John": `cut_after_surname`), not a given name. A cell that
is only a note ("(alias)") is missing. The notes cut are returned as written, so the encode
report can list them (docs/mapping.md, "Notes in name cells").
"""

from __future__ import annotations

import re

from blindmatch.client.encoding.normalise import Option, normalise_text

# Separating keywords, as `normalise_text` writes them ('Née' -> 'nee', 'a.k.a.' -> 'aka').
KEYWORDS = frozenset({"nee", "formerly", "aka", "alias"})
# Generational suffixes, as `normalise_text` writes them ('Jnr.' -> 'jnr'): a note when they
# end a name of more than one word. Not 'Junior' or 'Senior', which are names too ('Olive
# Senior'), nor 'V' or 'I', which are initials.
SUFFIXES = frozenset({"jr", "jnr", "sr", "snr", "ii", "iii", "iv"})
# The schema options only name fields carry.
_NAME_OPTIONS: frozenset[Option] = frozenset({"first-name", "nicknames"})

# A bracketed part with no bracket inside it (cut repeatedly, so nested ones go too).
_BRACKETED = re.compile(r"\([^()\[\]]*\)|\[[^()\[\]]*\]")
_UNCLOSED = re.compile(r"[(\[][^()\[\]]*$")
# Words: runs of anything but whitespace and the commas that separate names.
_WORD = re.compile(r"[^\s,]+")


def is_name_field(field: str, options: tuple[Option, ...] = (), split: bool = False) -> bool:
    """Whether the rule applies to a text field: its identifier says it holds a name
    (given_name, surname, forename, last_name, ...), it carries a name option, or the
    mapping cuts it from a full name (`split`)."""
    folded = field.casefold()
    return split or "name" in folded or bool(_NAME_OPTIONS.intersection(options))


def _tidy(text: str) -> str:
    """`text` with its runs of whitespace made one space, and no comma or space at its end."""
    return " ".join(text.split()).rstrip(" ,;/-")


def cut_brackets(value: str) -> tuple[str, list[str]]:
    """(`value` without its bracketed parts, the parts' contents as written)."""
    if "(" not in value and "[" not in value:  # (most names: nothing to look for)
        return value, []
    notes: list[str] = []
    while True:
        found = _BRACKETED.search(value) or _UNCLOSED.search(value)
        if found is None:
            return value, notes
        notes.append(_tidy(found.group()[1:].rstrip(")]")))
        value = _tidy(f"{value[: found.start()]} {value[found.end() :]}")


def cut_keyword(value: str) -> tuple[str, list[str]]:
    """(`value` up to its first separating keyword after the first word, [the rest])."""
    words = list(_WORD.finditer(value))
    for found in words[1:]:
        if normalise_text(found.group()) in KEYWORDS:
            return _tidy(value[: found.start()]), [_tidy(value[found.start() :])]
    return value, []


def cut_suffix(value: str) -> tuple[str, list[str]]:
    """(`value` without a generational suffix ending it after another word, [the suffix]):
    "SMITH JNR" -> ("SMITH", ["JNR"]); "Smith, Jr." -> ("Smith", ["Jr."]); "Jr" -> ("Jr", [])."""
    words = list(_WORD.finditer(value))
    if len(words) > 1 and normalise_text(words[-1].group()) in SUFFIXES:
        return _tidy(value[: words[-1].start()]), [words[-1].group()]
    return value, []


def cut_after_surname(value: str, surname: str) -> tuple[str, list[str]]:
    """Under `split = "surname-first"`, (`value` without a generational suffix right after
    its surname `surname` (as `split_name` cut it) and before the given names, [the suffix]):
    "SMITH JNR John" -> ("SMITH John", ["JNR"]) (before leftovers57: the given name 'jnr')."""
    words, cut = list(_WORD.finditer(value)), surname.replace(",", " ").split()
    texts = [w.group() for w in words]
    at = next((i + len(cut) for i in range(len(texts)) if texts[i : i + len(cut)] == cut), 0)
    if cut and 0 < at < len(words) - 1 and normalise_text(texts[at]) in SUFFIXES:
        return _tidy(f"{value[: words[at].start()]} {value[words[at].end() :]}"), [texts[at]]
    return value, []


def cut_words(value: str) -> tuple[str, list[str]]:
    """`cut_keyword`, then `cut_suffix` of what is left: the notes written as words."""
    name, notes = cut_keyword(value)
    name, suffix = cut_suffix(name)
    return name, [*suffix, *notes]


def cut_notes(value: str) -> tuple[str, list[str]]:
    """(the name, the notes cut from it): brackets first, then a keyword. "Smith (nee Jones)"
    -> ("Smith", ["nee Jones"]); "SMITH NEE JONES" -> ("SMITH", ["NEE JONES"]); "Kneeland"
    -> ("Kneeland", []); "MR JOHN SMITH JNR" -> ("MR JOHN SMITH", ["JNR"])."""
    name, notes = cut_brackets(value)
    name, rest = cut_words(name)
    return name, [n for n in (*notes, *rest) if n]


__all__ = [
    "KEYWORDS",
    "SUFFIXES",
    "cut_after_surname",
    "cut_brackets",
    "cut_keyword",
    "cut_notes",
    "cut_suffix",
    "cut_words",
    "is_name_field",
]
