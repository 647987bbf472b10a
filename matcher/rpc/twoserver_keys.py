"""Who may call each two-server RPC (docs/protocol.md "The two-server services"): a key per
party, as the bearer token.

Each RPC admits one caller, the one the protocol has call it: a member `Upload`s to every
role; the combiner calls S1's `Propose` and `Evaluate` and S2's `Prepare` and `Collect`; S1
opens S2's `Exchange`; the operator starts the combiner's `Run`. A role holds its own key
(what it presents to the parties it calls) and, for each caller it answers, that caller's
key or only its digest (`sha256:` and 64 hex digits: a role that checks a key need not be
able to present it). Without per-party keys every party's key is the role's own (one key
shared by S1, S2, the combiner and the operator, as before): the members are still kept to
`Upload`, but the parties cannot be told apart.

In a project run by the matcher (docs/operations.md "A project in two-server mode") a
member uploads with a ticket the matcher signed with the members' key instead
(core/tickets.py): `Upload` admits it, and only under the name it gives. A role given only
the members' key's digest cannot check tickets and refuses them.

A token nobody configured is UNAUTHENTICATED; a key of a known caller used for an RPC that
caller does not make is PERMISSION_DENIED, naming the RPC and whose key it is.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Mapping

from blindmatch.matcher import errors
from blindmatch.matcher.core import tickets
from blindmatch.matcher.core.tokens import token_hash

PARTIES = ("s1", "s2", "combiner", "operator")  # callers with a key of their own
LABELS = {"member": "the members'", "s1": "S1's", "s2": "S2's", "combiner": "the combiner's",
          "operator": "the operator's"}  # fmt: skip
DIGEST = "sha256:"


def digest(key: str) -> bytes:
    """A key's SHA-256 (keys are random; nothing to brute-force), or the digest given."""
    if key.startswith(DIGEST):
        try:
            raw = bytes.fromhex(key[len(DIGEST) :])
        except ValueError:
            raw = b""
        if len(raw) != 32:
            raise ValueError(f"{DIGEST}...: 64 hex digits after {DIGEST!r}")
        return raw
    return token_hash(key)


class Keys:
    """The digests of the keys a role answers, by caller."""

    def __init__(
        self, role: str, key: str, member_key: str, keys: Mapping[str, str] | None = None
    ) -> None:
        if not key or key.startswith(DIGEST):
            raise ValueError(f"{role}'s own key: the key itself (it presents it), not a digest")
        if keys is None:  # one key for every party
            parties = dict.fromkeys(PARTIES, key)
        else:
            unknown = sorted(set(keys) - set(PARTIES))
            if unknown or role in keys or not all(keys.values()):
                raise ValueError(
                    f"keys: by caller, one of {', '.join(p for p in PARTIES if p != role)}, each "
                    f"a key or its {DIGEST} digest (not {', '.join(unknown) or role})"
                )
            own = {role: key, **({"operator": key} if role == "combiner" else {})}
            parties = {**own, **keys}
        # The members' key itself (not a digest) checks the matcher's upload tickets.
        self.ticket_key = member_key if member_key and not member_key.startswith(DIGEST) else ""
        self.digests = {"member": digest(member_key) if member_key else b""}
        self.digests.update({who: digest(k) for who, k in parties.items()})
        if not member_key or self.digests["member"] in [self.digests[p] for p in parties]:
            raise ValueError("the parties' key and the members' key: two different keys")

    def check(self, name: str, rpc: str, caller: str, token: str | None) -> None:
        """Raise unless `token` is `caller`'s key (`name`: the role answering `rpc`), or for
        a member's call a valid upload ticket (`vouched`)."""
        if caller == "member" and tickets.is_ticket(token):
            self.vouched(name, token)
            return
        got = token_hash(token or "")
        want = self.digests.get(caller)
        if want is not None and hmac.compare_digest(got, want):
            return
        holders = [
            w for w, d in self.digests.items() if w != caller and hmac.compare_digest(got, d)
        ]
        wanted = f"{name} answers {rpc} only with {LABELS[caller]} key"
        if not holders:  # (a key file that is not the one the role was started with)
            flags = ("its --member-key-file" if caller == "member" else "its --key-file and "
                     "--party-key; the matcher's is its --two-server-key-file")  # fmt: skip
            raise errors.Unauthenticated(
                f"{wanted}: the key presented is none that {name} was started with ({flags})"
            )
        whose = LABELS[holders[0]] if len(holders) == 1 else "the parties'"
        raise errors.PermissionDenied(f"{wanted}, not with {whose}")

    def vouched(self, name: str, token: str | None) -> str:
        """The name a valid upload ticket admits uploads under; "" for a token that is not
        a ticket (the members' key: any name). UNAUTHENTICATED for a ticket refused."""
        if not tickets.is_ticket(token):
            return ""
        if not self.ticket_key:
            raise errors.Unauthenticated(
                f"{name} holds only the members' key's digest, so it cannot check the "
                "matcher's upload tickets: start it with the members' key itself "
                "(--member-key-file)"
            )
        try:
            held, _ = tickets.verify(self.ticket_key, str(token), time.time())
        except ValueError as exc:
            why = str(exc)
            if why == tickets.FORGED:  # (or the matcher and the role hold different keys)
                why += (f" that {name} holds: its --member-key-file and the matcher's "
                        "--two-server-member-key-file must be one key")  # fmt: skip
            raise errors.Unauthenticated(f"{name} refused the upload: {why}") from None
        return held


def one_project(names: list[str], party: str) -> None:
    """Refuse a run or batch whose members are not of one project (twoattack): a project's
    uploads (project/member/tag, the matcher's tickets) are compared with that project's
    only, and never with a stand-alone deployment's members (no "/"), so that a C holding
    several projects cannot link members who never agreed to share with each other."""
    projects = {n.split("/", 1)[0] if "/" in n else "" for n in names}
    if len(projects) > 1:
        said = ", ".join(repr(p) if p else "stand-alone" for p in sorted(projects))
        raise errors.PermissionDenied(
            f"members: uploads of {said}; {party} compares the uploads of one project only"
        )


__all__ = ["DIGEST", "LABELS", "PARTIES", "Keys", "digest", "one_project"]
