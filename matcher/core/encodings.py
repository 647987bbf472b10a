"""Which CLKs may meet: one CLK length and one keyed (schema, secret) fingerprint a project,
and one way of scoring them.

The one compatibility rule for everything a project holds or is asked: uploads for batch
runs, standing indexes, real-time queries and watches. CLKs of another length, or made
with another schema or secret, would compare as noise; they are refused, naming what the
project already holds. So are encodings of the same fingerprint that say otherwise of how
a pair is scored (their fallback CLK's bits, the schema's `blindmatch.rule`): the same
schema has one rule, so one of them lost it on its way from the schema (an ENCODED folder
written without it), and a run or a query would otherwise score some pairs by one rule and
some by the other, or silently by neither.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from blindmatch.matcher.core.tokens import same_hash
from blindmatch.matcher.domain import FINGERPRINT_BYTES, MAX_CLK_BITS, NO_RULE, Encoding, Rule
from blindmatch.matcher.errors import FailedPrecondition, InvalidArgument


@dataclass(frozen=True)
class Held:
    """Something a project already holds, named for messages ("south's index")."""

    what: str
    encoding: Encoding
    plural: bool = False  # "this project's other uploads have ..."
    ident: str = ""  # its fingerprint id (protos/wire.py), for the message; "" to leave it out
    schema_digest: str = ""  # SHA-256 of its schema, when its client sent one
    # Whether its fallback CLK and rule must be the new encodings' too (False: the member's
    # own index, which a change may lay out anew).
    layout: bool = True


def as_own(held: list[Held], member: str) -> list[Held]:
    """`held` as `member` is told of it: its own index or upload named `your ...`."""
    mine = f"{member}'s "
    return [replace(h, what="your " + h.what.removeprefix(mine)) if h.what.startswith(mine)
            else h for h in held]  # fmt: skip


def check_clk_bits(clk_bits: int, field: str) -> None:
    """A CLK length the matcher takes: a whole number of 64-bit words, up to MAX_CLK_BITS."""
    if clk_bits == 0 or clk_bits % 64 or clk_bits > MAX_CLK_BITS:
        raise InvalidArgument(
            f"{field}: {clk_bits} is not a multiple of 64 between 64 and {MAX_CLK_BITS}"
        )


def check_fingerprint(fingerprint: bytes, field: str) -> None:
    if len(fingerprint) != FINGERPRINT_BYTES:
        raise InvalidArgument(f"{field}: must be {FINGERPRINT_BYTES} bytes")


def scoring(encoding: Encoding) -> str:
    """How pairs of these encodings are scored, in words (for a refusal)."""
    if not encoding.fallback_bits:
        return "one CLK a pair, without a fallback CLK"
    if not encoding.rule.active:
        return f"a {encoding.fallback_bits}-bit fallback CLK and no blindmatch.rule"
    r = encoding.rule
    return (
        f"a {encoding.fallback_bits}-bit fallback CLK and blindmatch.rule "
        f"{{gap {r.gap:g}, offset {r.offset:g}, reach {r.reach:g}}}"
    )


def _layout(encoding: Encoding) -> tuple[int, Rule]:
    return encoding.fallback_bits, encoding.rule if encoding.rule.active else NO_RULE


def same_scoring(a: Encoding, b: Encoding) -> bool:
    """Whether pairs of `a`'s and of `b`'s CLKs are scored alike: the same fallback CLK and
    the same rule over both CLKs (a rule that moves nothing counts as none)."""
    return _layout(a) == _layout(b)


def check_compatible(
    encoding: Encoding,
    held: Iterable[Held],
    ident: str = "",
    schema_digest: str = "",
    *,
    layout: bool = True,
) -> None:
    """Refuse CLKs made with another CLK length, schema or secret than the project's, or
    (with `layout`: `encoding` says how its pairs are scored; a query does not) scored
    otherwise than what the project holds under the same fingerprint.

    With fingerprint ids (`ident` for the new encodings, `Held.ident` for what is held) the
    refusal names both, so a member can see which side differs from what it checked with
    `project show`; never any other part of a fingerprint. With both schema digests it also
    says whether the schema differs or, the schema being the same, the secret.
    """
    for h in held:
        other = h.encoding
        if other.clk_bits != encoding.clk_bits:
            has = "have" if h.plural else "has"
            raise FailedPrecondition(
                f"CLKs of {encoding.clk_bits} bits, but {h.what} {has} {other.clk_bits}-bit "
                "CLKs; encode with the project's shared schema"
            )
        if not same_hash(other.fingerprint, encoding.fingerprint):
            if ident and h.ident:
                raise FailedPrecondition(
                    f"these encodings were made with a different schema or secret than "
                    f"{h.what}: {_which(schema_digest, h.schema_digest, h.what)}; their "
                    "fingerprint id "
                    f"is {ident}, the project's is {h.ident} (no other part of either "
                    "fingerprint is shown: it would help guess the secret)"
                )
            raise FailedPrecondition(
                f"these encodings were made with a different schema or secret than {h.what}; "
                "encode again with the schema and secret agreed for this project (no part of "
                "either fingerprint is shown: it would help guess the secret)"
            )
        if layout and h.layout and not same_scoring(other, encoding):
            has = "have" if h.plural else "has"
            raise FailedPrecondition(
                f"these encodings are scored with {scoring(encoding)}, but {h.what} {has} "
                f"{scoring(other)}, under the same schema and secret: the schema has one "
                "rule, so one side's ENCODED folder lost it (written without the schema's "
                "blindmatch.rule); on whichever side differs from the schema, encode again "
                "with `blindmatch encode` and the agreed schema, then upload again or put "
                "the index's records again (`blindmatch index add ENCODED`; `index sync` "
                "sends only CLKs that changed, and these did not)"
            )


def _which(mine: str, theirs: str, what: str = "") -> str:
    """What differs, and what to do, from the two schema digests ("" when not sent); `what`
    the other encodings (`your index`: the asking member's own, made with other ones)."""
    own = what.startswith("your ")
    member = "the ones you made it with" if own else "that member's"
    source = "you made it with" if own else "from that member"
    if mine and theirs and mine != theirs:
        return (
            f"the schema differs (the secret may too): get the schema file {source}, "
            "compare SHA-256s, and encode again with the agreed schema and secret"
        )
    if mine and theirs:
        return (
            "the schema is the same, so the secret differs: compare your secret's id (`secret "
            f"new` and `secret open` print it) with {member}{'' if own else ' by phone'}, and "
            "encode again with the agreed secret"
        )
    return (
        "the fingerprint covers both, so compare your schema file's SHA-256 and your secret's "
        f"id (`secret new` and `secret open` print it) with {member}, then encode again "
        "with the agreed ones"
    )
