"""Hostile protobuf messages, built by mutating valid ones field by field from their
descriptors (what benchmarks/rpcfuzz.py sends): empty and huge strings, unicode, NUL and
newlines in names, negative and huge integers, NaN and infinities, bytes of the wrong
length, repeated fields emptied, duplicated or grown, enums out of range, oneofs switched,
sub-messages cleared; and client streams with messages dropped, repeated, reordered, cut
short, or a second header."""

from __future__ import annotations

import math
import random
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

F = FieldDescriptor
INTS = {
    F.TYPE_INT32: (-(2**31), 2**31 - 1),
    F.TYPE_SINT32: (-(2**31), 2**31 - 1),
    F.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    F.TYPE_INT64: (-(2**63), 2**63 - 1),
    F.TYPE_SINT64: (-(2**63), 2**63 - 1),
    F.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    F.TYPE_UINT32: (0, 2**32 - 1),
    F.TYPE_FIXED32: (0, 2**32 - 1),
    F.TYPE_UINT64: (0, 2**64 - 1),
    F.TYPE_FIXED64: (0, 2**64 - 1),
}
FLOATS = (
    math.nan,
    math.inf,
    -math.inf,
    -0.0,
    0.0,
    -1.0,
    1.0,
    1.0000001,
    0.5,
    1e308,
    5e-324,
    -1e-9,
    2.0,
    0.9999999,
)
STRINGS = (
    "",
    " ",
    "a",
    "x" * 65,
    "x" * 129,
    "y" * 5000,
    "\x00",
    "north\x00",
    "nörth",
    "north\n",
    "../../etc/passwd",
    "trial/north",
    "%s%n",
    "\u202eevil",
    "\U0001f600" * 10,
    "NORTH",
    "-",
    ".",
    "_",
    "a" * 64,
    "0",
    "bmr-" + "a" * 26,
    "bmr-",
    "null",
    "' OR 1=1 --",
)


class Mutator:
    """Mutates messages in place; `names` are strings worth trying (the world's projects,
    members, users, references, batches: a hostile member knows them)."""

    def __init__(self, rng: random.Random, names: list[str], huge: bool = True) -> None:
        self.rng = rng
        self.names = names
        self.huge = huge  # strings and bytes over the 16 MiB message limit, now and then

    # -- scalars ----------------------------------------------------------------------------

    def string(self, old: str) -> str:
        r = self.rng.random()
        if r < 0.35:
            return self.rng.choice(STRINGS)
        if r < 0.6 and self.names:
            name = self.rng.choice(self.names)
            return (
                name
                if self.rng.random() < 0.7
                else name + self.rng.choice(["\x00", "\n", " ", "x"])
            )
        if r < 0.7:
            return old * self.rng.randint(2, 50)
        if r < 0.8 and old:
            i = self.rng.randrange(len(old))
            return old[:i] + chr(self.rng.randint(0, 0x2FFF)) + old[i + 1 :]
        if r < 0.82 and self.huge:
            return "z" * (17 * 2**20)
        return "".join(chr(self.rng.randint(1, 0x7FF)) for _ in range(self.rng.randint(0, 40)))

    def blob(self, old: bytes) -> bytes:
        r = self.rng.random()
        n = len(old)
        if r < 0.2:
            return b""
        if r < 0.45 and n:  # one byte off, or a part off
            return old[: self.rng.randrange(n)] if self.rng.random() < 0.5 else old + b"\x00"
        if r < 0.6:
            return old * self.rng.randint(2, 5)
        if r < 0.75:
            return self.rng.randbytes(self.rng.choice([1, 7, 8, 16, 31, 32, 33, 64, 128, 1000]))
        if r < 0.9 and n:  # same length, random content
            return self.rng.randbytes(n)
        if r < 0.93 and self.huge:
            return bytes(17 * 2**20)
        return bytes([255]) * self.rng.choice([1, 8, 128, 4096])

    def integer(self, kind: int, old: int) -> int:
        lo, hi = INTS[kind]
        r = self.rng.random()
        if r < 0.4:
            value = self.rng.choice(
                [
                    0,
                    1,
                    -1,
                    lo,
                    hi,
                    hi // 2 + 1,
                    7,
                    8,
                    63,
                    64,
                    65,
                    1023,
                    1024,
                    1025,
                    2048,
                    8192,
                    10**6,
                    2**31,
                    2**32,
                    2**53 + 1,
                ]
            )
        elif r < 0.7:
            value = old + self.rng.choice([-1, 1, -8, 8, -64, 64])
        elif r < 0.85:
            value = old * self.rng.choice([2, 10, 1000, -1])
        else:
            value = self.rng.randint(lo, hi)
        return min(max(value, lo), hi)

    def scalar(self, field: FieldDescriptor, old: Any) -> Any:
        t = field.type
        if t == F.TYPE_STRING:
            return self.string(old or "")
        if t == F.TYPE_BYTES:
            return self.blob(old or b"")
        if t == F.TYPE_BOOL:
            return not old if self.rng.random() < 0.8 else bool(old)
        if t in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
            if self.rng.random() < 0.7:
                return self.rng.choice(FLOATS)
            return (old or 0.0) + self.rng.uniform(-2, 2)
        if t == F.TYPE_ENUM:
            known = [v.number for v in field.enum_type.values]
            return self.rng.choice([*known, -1, max(known) + 1, 99, 2**31 - 1])
        return self.integer(t, old or 0)

    # -- fields and messages ----------------------------------------------------------------

    def mutate(self, msg: Message, count: int | None = None, depth: int = 0) -> list[str]:
        """Change `count` (default 1-3) fields of `msg`; the changed fields' paths."""
        fields = list(msg.DESCRIPTOR.fields)
        if not fields:
            return []
        done: list[str] = []
        for _ in range(count or self.rng.choice([1, 1, 1, 2, 2, 3])):
            field = self.rng.choice(fields)
            try:
                done += [f"{field.name}{p}" for p in self._field(msg, field, depth)]
            except (ValueError, TypeError, OverflowError):
                continue  # a value protobuf itself will not hold (e.g. a lone surrogate)
        return done

    def _field(self, msg: Message, field: FieldDescriptor, depth: int) -> list[str]:
        name = field.name
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            target = getattr(msg, name)
            for _ in range(self.rng.randint(1, 4)):
                key = self.string("k")
                value_field = field.message_type.fields_by_name["value"]
                if value_field.message_type is None:
                    target[key] = self.scalar(value_field, None)
            return [""]
        if field.is_repeated:
            return self._repeated(msg, field, depth)
        if field.message_type is not None:
            sub = getattr(msg, name)
            if self.rng.random() < 0.2 or depth > 3:
                msg.ClearField(name)
                return [" (cleared)"]
            if not msg.HasField(name):
                sub.SetInParent()
            return ["." + p for p in self.mutate(sub, None, depth + 1)] or [""]
        setattr(msg, name, self.scalar(field, getattr(msg, name)))
        return [""]

    def _repeated(self, msg: Message, field: FieldDescriptor, depth: int) -> list[str]:
        target = getattr(msg, field.name)
        items = list(target)
        r = self.rng.random()
        if field.message_type is not None:
            if r < 0.3 or not items:
                target.add()
                self.mutate(target[-1], None, depth + 1)
            elif r < 0.5:
                del target[:]
            elif r < 0.7:
                target.add().CopyFrom(items[0])
            else:
                self.mutate(target[self.rng.randrange(len(items))], None, depth + 1)
            return ["[]"]
        if r < 0.2:
            del target[:]
        elif r < 0.4 and items:
            target.append(self.rng.choice(items))  # a duplicate
        elif r < 0.5:
            one = items[0] if items else self.scalar(field, None)
            size = len(one) if isinstance(one, str | bytes) else 8
            many = min(self.rng.choice([100, 10_001, 70_000]), max(2, 2**23 // max(size, 1)))
            target.extend([one] * many)  # (at most ~8 MiB: the fuzzer's own memory)
        elif r < 0.6 and items:
            reordered = items[::-1]
            del target[:]
            target.extend(reordered)
        elif items and r < 0.85:
            i = self.rng.randrange(len(items))
            target[i] = self.scalar(field, items[i])
        else:
            target.append(self.scalar(field, None))
        return ["[]"]

    # -- client streams ---------------------------------------------------------------------

    def stream(self, messages: list[Message]) -> tuple[list[Message], list[str]]:
        """A copy of a client stream with 1-2 changes: a message mutated, dropped, repeated,
        moved, a second copy of the first (header) later, an empty message, or cut short."""
        out = [type(m)() for m in messages]
        for m, copy in zip(messages, out, strict=True):
            copy.CopyFrom(m)
        what: list[str] = []
        for _ in range(self.rng.choice([1, 1, 2])):
            r = self.rng.random()
            if r < 0.55 and out:
                i = self.rng.randrange(len(out))
                what += [f"msg{i}.{p}" for p in self.mutate(out[i])]
            elif r < 0.65 and out:
                i = self.rng.randrange(len(out))
                del out[i]
                what.append(f"drop msg{i}")
            elif r < 0.72 and out:
                i = self.rng.randrange(len(out))
                out.insert(i, out[i])
                what.append(f"repeat msg{i}")
            elif r < 0.8 and len(out) > 1:
                i, j = self.rng.sample(range(len(out)), 2)
                out[i], out[j] = out[j], out[i]
                what.append(f"swap msg{i} msg{j}")
            elif r < 0.87 and out:
                out.insert(self.rng.randint(1, len(out)), out[0])
                what.append("header again")
            elif r < 0.93:
                out.insert(self.rng.randint(0, len(out)), type(messages[0])())
                what.append("empty message")
            else:
                cut = self.rng.randint(0, len(out))
                out = out[:cut]
                what.append(f"cut after {cut}")
        return out, what
