"""A run on two non-colluding servers and a combiner (matcher/core/twoserver.py) on realistic
encodings of the default schema (a record-level CLK and a fallback CLK): its links are the
exhaustive run's wherever blocking proposes the pairs; the combiner only ever holds popcounts
and, with link bits (the default), the servers' shares of the output bits, with the Dice
oracle their permuted share differences."""

from __future__ import annotations

import dataclasses
import json
import secrets
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from blindmatch.client.encoding import sharing as client
from blindmatch.client.encoding.schema import load_schema
from blindmatch.client.encoding.schemacheck import check_schema
from blindmatch.client.errors import InputError
from blindmatch.matcher.core import fallback, linkbit, proposal, twoblocking, tworun, twoserver
from blindmatch.matcher.core.compare import Candidates, merge
from blindmatch.matcher.core.kernel import dice_pairs
from blindmatch.matcher.core.solve import Links, links_from_groups, solve
from blindmatch.matcher.usecases.runs import match
from tests.support import FALLBACK_SCHEMA, MESSY_SECRET, in_process_servers

SCHEMA = load_schema(FALLBACK_SCHEMA)
SECRET = MESSY_SECRET
THRESHOLD = 0.8
Clks = npt.NDArray[np.uint8]


class RecordingCombiner(twoserver.Combiner):
    """The real combiner, keeping a copy of every message it is given."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.received: list[Clks] = []

    def scores(self, batch: twoserver.PairBatch, m1: Clks, m2: Clks) -> npt.NDArray[np.float64]:
        self.received += [m1.copy(), m2.copy()]
        return super().scores(batch, m1, m2)


def three_party(
    datasets: list[Clks],
    fallback_bits: int,
    plan: client.BandPlan,
    transcript: linkbit.Transcript | None = None,
    dummies: float = 0.0,
    **reveal: object,
) -> tuple[tworun.TwoServerResult, RecordingCombiner, list[client.SharedUpload]]:
    """The run on three parties; C reveals Dice (the oracle) unless `reveal` says otherwise;
    S1 adds `dummies` dummy pairs of tokens a real one."""
    uploads = [client.shared_upload(d, SECRET, plan, fallback_bits) for d in datasets]
    s1, s2 = in_process_servers(uploads, lacking=False, dummies=dummies)
    combiner = RecordingCombiner(
        [u.combiner.popcounts for u in uploads], THRESHOLD, **({"reveal": "dice"} | reveal)
    )
    result = tworun.run(s1, s2, combiner, batch_pairs=5000, transcript=transcript)
    return result, combiner, uploads


def assert_same_links(got: Links, want: Links) -> None:
    for name in ("dset", "row", "partner", "partner_row", "score"):
        assert np.array_equal(getattr(got, name), getattr(want, name)), name


def test_with_blocking_that_misses_no_pair_the_links_are_the_exhaustive_runs(
    messy_members: tuple[list[Clks], int],
) -> None:
    datasets, fallback_bits = messy_members
    # 4 bits x 40 bands: a pair at Dice 0.8 agrees on ~85% of bits, so it collides in some
    # band but with a chance of 10^-12; most unrelated pairs are proposed too.
    result, _, _ = three_party(datasets, fallback_bits, client.BandPlan(bits=4, bands=40))
    exhaustive = match(datasets, THRESHOLD, workers=1, blocking="exhaustive",
                       fallback_bits=fallback_bits)  # fmt: skip
    assert (
        result.method
        == "two-server+fallback"
        == exhaustive.method.replace("exhaustive", "two-server")
    )
    assert len(exhaustive.links) > 300
    assert result.groups == exhaustive.groups
    assert_same_links(result.links, exhaustive.links)


def plaintext_on(
    proposed: list[twoserver.PairBatch], datasets: list[Clks], fallback_bits: int
) -> Links:
    """The exhaustive run's decisions on the pairs blocking proposed: the kernel's Dice test
    on each pair's CLK in plaintext, solved, links scored by the fallback rule."""
    split = fallback.Split.of(datasets, fallback_bits)
    parts = []
    for batch in proposed:
        clks = split.first if batch.clk == twoserver.RECORD else split.second
        sims, keep = dice_pairs(
            clks[batch.member_a], clks[batch.member_b], batch.rows_a, batch.rows_b, THRESHOLD
        )
        n = len(sims)
        parts.append(
            Candidates(
                sims,
                np.full(n, batch.member_a, np.uint32),
                np.full(n, batch.member_b, np.uint32),
                batch.rows_a[keep],
                batch.rows_b[keep],
            )
        )
    groups = solve(merge(parts))
    return links_from_groups(groups, datasets, lambda *p: fallback.pair_scores(split, *p))


def test_with_keyed_blocking_the_links_are_the_plaintext_runs_on_the_proposed_pairs(
    messy_members: tuple[list[Clks], int],
) -> None:
    datasets, fallback_bits = messy_members
    # 20 bits a band (the recommendation's width) in only 30 bands: blocking misses pairs.
    result, _, _ = three_party(datasets, fallback_bits, client.BandPlan(bits=20, bands=30))
    exhaustive = match(datasets, THRESHOLD, workers=1, blocking="exhaustive",
                       fallback_bits=fallback_bits)  # fmt: skip
    assert len(result.links) < len(exhaustive.links)  # the missed pairs are missed
    cross = sum(len(a) * len(b) for i, a in enumerate(datasets) for b in datasets[i + 1 :])
    assert result.comparisons < 0.05 * cross
    assert {b.clk for b in result.proposed} == {twoserver.RECORD, twoserver.FALLBACK}
    assert_same_links(result.links, plaintext_on(result.pairs, datasets, fallback_bits))


def test_with_link_bits_the_links_are_the_dice_oracles_scored_by_bucket(
    messy_members: tuple[list[Clks], int],
) -> None:
    datasets, fallback_bits = messy_members
    plan = client.BandPlan(bits=20, bands=30)
    buckets = (0.85, 0.9, 0.95)
    got, _, _ = three_party(datasets, fallback_bits, plan, reveal="link-bit", buckets=buckets)
    bare, _, _ = three_party(datasets, fallback_bits, plan, reveal="link-bit", buckets=())
    oracle, _, _ = three_party(datasets, fallback_bits, plan)  # C learns each pair's Dice
    assert len(oracle.links) > 300 and got.comparisons == oracle.comparisons
    for name in ("dset", "row", "partner", "partner_row"):
        assert np.array_equal(getattr(got.links, name), getattr(oracle.links, name)), name
        assert np.array_equal(getattr(bare.links, name), getattr(oracle.links, name)), name
    # A link's score is the lower end of its Dice's bucket; 0.0 below the threshold.
    cuts = np.array([0.0, THRESHOLD, *buckets])
    want = cuts[np.searchsorted(cuts, oracle.links.score, side="right") - 1]
    assert np.array_equal(got.links.score, want)
    assert set(np.unique(bare.links.score).tolist()) <= {0.0, THRESHOLD}
    assert {THRESHOLD, *buckets} <= set(got.links.score.tolist())  # every bucket is used


def test_with_link_bits_c_receives_output_shares_only(
    messy_members: tuple[list[Clks], int],
) -> None:
    datasets, fallback_bits = messy_members
    seen = linkbit.Transcript(keep=True)
    result, combiner, _ = three_party(
        datasets, fallback_bits, client.BandPlan(bits=20, bands=30), seen, reveal="link-bit"
    )
    assert combiner.received == []  # no permuted difference was ever made for C
    to_c = [(w, len(p)) for _, r, w, p in seen.messages if r == "C"]
    circuits = len([m for m in seen.messages if m[1] == "S1" and m[2] == "setup"])
    assert {w for w, _ in to_c} == {"output"} and len(to_c) == 2 * circuits
    assert seen.pairs >= result.comparisons
    from_c = {(r, w) for s, r, w, _ in seen.messages if s == "C"}
    assert from_c == {("S1", "setup"), ("S2", "setup")}
    assert all(
        len(p) == linkbit.SEED_BYTES for s, r, _, p in seen.messages if (s, r) == ("C", "S1")
    )


def test_with_link_bits_c_learns_the_identities_of_the_linking_pairs_only(
    messy_members: tuple[list[Clks], int],
) -> None:
    """What C receives, decoded as C can: of S1's proposal only each part's members, CLK and
    number of pairs; from the output shares each pair's bits and, for a linking pair only,
    its rows; each share alone uniform. The non-links among the candidates (most of them)
    leave no identity at C."""
    datasets, fallback_bits = messy_members
    seen = linkbit.Transcript(keep=True)
    plan = client.BandPlan(bits=8, bands=20)  # many candidates that do not link
    result, combiner, _ = three_party(datasets, fallback_bits, plan, seen, reveal="link-bit")
    oracle, _, _ = three_party(datasets, fallback_bits, plan)
    assert np.array_equal(result.links.row, oracle.links.row)
    # (`blocks`: an unblocked part's block sizes, in process; these parts are blocked.
    # `standing`: C's own choice of path for a query's part, not from S1: never set here.)
    fields = {"member_a", "member_b", "clk", "pairs", "blocks", "standing"}
    assert all(set(vars(p)) == fields and p.blocks == () and not p.standing
               for p in result.proposed)  # fmt: skip
    assert result.pairs == [] and result.comparisons == oracle.comparisons
    cuts = len(combiner.cutoffs)
    decoded: set[tuple[int, int]] = set()
    tagged_pairs = links = 0
    shares = []
    words = 0
    outputs: list[bytes] = []
    for sender, receiver, _what, payload in seen.messages:
        if (sender, receiver) == ("C", "S2"):  # S2's seed and c shares: the batch's words
            dealt = len(payload[linkbit.SEED_BYTES :]) // 8
            words = dealt // linkbit.dealt_rows(linkbit.circuit(1024, combiner.cutoffs))
        if receiver == "C":
            outputs.append(payload)
            if len(outputs) < 2:
                continue
            rows = len(outputs[0]) // (8 * words)
            one, two = (np.frombuffer(o, "<u8").reshape(rows, words) for o in outputs)
            bits = linkbit.unslice(one ^ two, 64 * words)
            outputs = []
            if rows == cuts:
                continue  # an extra inside a group: C named its rows itself
            assert rows == cuts + linkbit.TAG_BITS
            shares += [one, two]
            link = bits[0]
            # Padding past the batch's pairs decodes as non-links (no pair).
            assert not bits[cuts:, ~link].any()  # no tag bit of a non-link
            rows_a, rows_b = linkbit.untag(bits)
            decoded |= set(zip(rows_a[link].tolist(), rows_b[link].tolist(), strict=True))
            tagged_pairs += 64 * words
            links += int(link.sum())
    candidates = sum(p.pairs for p in result.proposed)
    assert tagged_pairs >= candidates > 20 * links > 0  # most candidates do not link
    assert len(decoded) <= links  # rows of linking pairs only (two members may share rows)
    # Each server's share alone is balanced, the tag rows' too (a share of link & tag would
    # otherwise be the tag wherever the server's link share is 1).
    for share in shares[:: max(1, len(shares) // 8)]:
        ones = np.bitwise_count(share[cuts:]).sum() / (64 * share[cuts:].size)
        assert 0.45 < ones < 0.55


def test_the_combiner_never_receives_a_clk_or_a_share(
    messy_members: tuple[list[Clks], int],
) -> None:
    datasets, fallback_bits = messy_members
    result, combiner, uploads = three_party(
        datasets, fallback_bits, client.BandPlan(bits=20, bands=200)
    )
    # What C holds: popcounts (integers, one a record and CLK) and the threshold; no bytes.
    for upload in uploads:
        assert set(vars(upload.combiner)) == {"popcounts"}
        assert all(p.dtype == np.int64 and p.ndim == 1 for p in upload.combiner.popcounts)
    held = {name: value for name, value in vars(combiner).items() if name != "received"}
    assert set(held) == {"_pops", "threshold", "has_fallback", "reveal", "cutoffs", "rule",
                         "bridge", "reach"}  # fmt: skip
    assert all(p.dtype == np.int64 and p.ndim == 1 for m in held["_pops"] for p in m)
    # What C is sent: permuted differences, none of them a CLK or a share of one, and none
    # the plain difference of two CLKs (the positions where they differ).
    got = np.concatenate(combiner.received)
    assert len(got) == 2 * (result.comparisons + len(result.links) // 2)  # + links' scores
    split = fallback.Split.of(datasets, fallback_bits)
    known = {row.tobytes() for clks in (*split.first, *split.second) for row in clks}
    known |= {
        row.tobytes() for u in uploads for part in (*u.s1.shares, *u.s2.shares) for row in part
    }
    assert not known & {row.tobytes() for row in got}
    batch = next(b for b in result.pairs if len(b))  # the first C was sent
    assert batch.clk == twoserver.RECORD
    m1, m2 = combiner.received[0], combiner.received[1]
    rows_a, rows_b = batch.rows_a[: len(m1)], batch.rows_b[: len(m1)]
    a, b = split.first[batch.member_a][rows_a], split.first[batch.member_b][rows_b]
    combined = m1 ^ m2
    assert np.array_equal(
        np.bitwise_count(combined).sum(axis=1), np.bitwise_count(a ^ b).sum(axis=1)
    )
    assert not np.array_equal(combined, a ^ b)


def test_members_with_one_secret_draw_the_same_bands_and_fresh_shares(
    messy_members: tuple[list[Clks], int],
) -> None:
    datasets, fallback_bits = messy_members
    plan = client.BandPlan(bits=20, bands=50)
    one = client.shared_upload(datasets[0][:20], SECRET, plan, fallback_bits)
    again = client.shared_upload(datasets[0][:20], SECRET, plan, fallback_bits)
    other = client.shared_upload(datasets[0][:20], b"another project", plan, fallback_bits)
    for k in (twoserver.RECORD, twoserver.FALLBACK):
        same, fresh = one.s1.bands[k], again.s1.bands[k]
        assert np.array_equal(same.keys, fresh.keys)  # the same record collides
        assert not np.array_equal(same.sealed, fresh.sealed)  # sealed afresh each upload
        assert not np.isin(same.keys, other.s1.bands[k].keys).any()  # keys are the secret's
        assert not np.array_equal(one.s1.shares[k], again.s1.shares[k])
    assert not np.isin(one.s1.bands[0].keys, one.s1.bands[1].keys).any()  # bands of its own
    assert one.s2.seal_key != again.s2.seal_key
    rebuilt = np.concatenate(
        [one.s1.shares[0] ^ one.s2.shares[0], one.s1.shares[1] ^ one.s2.shares[1]], axis=1
    )
    assert np.array_equal(rebuilt, datasets[0][:20])


def test_a_bad_upload_or_plan_is_refused() -> None:
    with pytest.raises(ValueError, match="20 bits x 0 bands"):
        client.BandPlan(bits=20, bands=0)
    with pytest.raises(ValueError, match="65 bits"):
        client.BandPlan(bits=65, bands=10)
    with pytest.raises(ValueError, match="a fallback CLK of 12 bits"):
        client.shared_upload(np.zeros((2, 16), np.uint8), SECRET, fallback_bits=12)
    with pytest.raises(ValueError, match="positive threshold"):
        twoserver.Combiner([[np.zeros(2, np.int64)]], 0.0)
    with pytest.raises(ValueError, match="reveals 'link-bit' or 'dice'"):
        twoserver.Combiner([[np.zeros(2, np.int64)]], 0.8, reveal="hamming")
    with pytest.raises(ValueError, match="cut-offs above the threshold"):
        twoserver.Combiner([[np.zeros(2, np.int64)]], 0.8, buckets=(0.75,))
    assert twoserver.Combiner([[np.zeros(2, np.int64)]], 0.8).cutoffs == (0.8, 0.85, 0.9, 0.95)
    with pytest.raises(ValueError, match="same CLKs"):
        twoserver.Combiner([[np.zeros(2, np.int64)], [np.zeros(2, np.int64)] * 2], 0.8)


def test_the_schema_sets_the_keyed_blocking_and_bad_settings_are_refused(tmp_path: Path) -> None:
    assert client.plan_of(SCHEMA) == client.RECOMMENDED == client.BandPlan(20, 1600)
    raw = json.loads(FALLBACK_SCHEMA.read_text())
    path = tmp_path / "schema.json"
    raw["blindmatch"]["twoserver"] = {"bits": 24, "bands": 5089}
    path.write_text(json.dumps(raw))
    assert client.plan_of(load_schema(path)) == client.BandPlan(24, 5089)
    assert "two-server keyed blocking: 5,089 bands of 24 bits a CLK" in check_schema(path).render()
    for bad, message in (
        ({"bits": 20}, r'blindmatch.twoserver must be \{"bits": R, "bands": B\}'),
        ({"bits": 65, "bands": 10}, "twoserver.bits must be a whole number from 1 to 64, not 65"),
        ({"bits": 20, "bands": "many"}, "twoserver.bands must be a whole number .* not 'many'"),
        ({"bits": True, "bands": 10}, "twoserver.bits"),
    ):
        raw["blindmatch"]["twoserver"] = bad
        path.write_text(json.dumps(raw))
        with pytest.raises(InputError, match=message) as refused:
            load_schema(path)
        assert str(path) in str(refused.value)


def test_the_pair_budget_refuses_exactly_the_pairs_evaluated_before_whatever_the_order() -> None:
    """core/pairbudget.py against a plain set: many batches (its sorted runs merge), pairs
    either way round, duplicates inside a batch, a refused batch counting nothing, and a
    member's upload forgetting its pairs."""
    from blindmatch.matcher.core.pairbudget import PairBudget

    rng = np.random.default_rng(5)
    budget, seen = PairBudget(), set()
    for k in range(300):
        n = int(rng.integers(1, 40))
        a, b = rng.integers(0, 30, n).astype(np.uint32), rng.integers(0, 30, n).astype(np.uint32)
        swap = bool(k % 2)
        pairs = [(int(x), int(y)) for x, y in zip(a, b, strict=True)]
        want = sum(1 for p in set(pairs) if p in seen or pairs.count(p) > 1)
        got = budget.spend("south", "north", b, a) if swap else budget.spend("north", "south", a, b)
        assert got == want, k
        if not want:
            seen |= set(pairs)
    assert budget.spend("north", "west", np.zeros(1, np.uint32), np.zeros(1, np.uint32)) == 0
    budget.forget("south")
    assert budget.spend("north", "south", np.zeros(1, np.uint32), np.zeros(1, np.uint32)) == 0
    assert budget.spend("north", "west", np.zeros(1, np.uint32), np.zeros(1, np.uint32)) == 1


def test_members_tell_s1_who_lacks_the_fallback_fields_by_the_matchers_rule() -> None:
    rng = np.random.default_rng(4)
    first, second = rng.integers(0, 400, 500), rng.integers(0, 400, 500)
    assert client.LACKING_RATIO == fallback.LACKING_RATIO
    assert np.array_equal(client.lacking(first, second),
                          fallback.lacking_from_popcounts(first, second))  # fmt: skip


def test_s1_answers_extras_only_inside_what_a_group_can_hold() -> None:
    """core/proposal.py on three members: a pair S1 proposed, named, is answered 0 and never
    counted; an extra needs both records in proposed pairs, one extra a record a member, the
    run's cut-offs and, with a fallback CLK, its own CLK (the other answered 0)."""
    rows = np.arange(4, dtype=np.uint32)
    proposed = [twoserver.PairBatch(0, 1, twoserver.RECORD, rows[:3], rows[:3]),
                twoserver.PairBatch(1, 2, twoserver.RECORD, rows[:3], rows[:3])]  # fmt: skip
    names = ["north", "south", "west"]
    cuts = (0.8, *twoserver.default_buckets(0.8))
    p = proposal.Proposal(names, [4, 4, 4], proposed, cuts, None)
    one = np.array([1], np.uint32)
    # (north 1, west 1): both records in proposed pairs, in a group north 1 - south 1 - west 1.
    checked = p.check("north", "west", 0, one, one, cuts)
    assert checked.extras == 1 and not checked.proposed.any()
    p.commit(checked)
    with pytest.raises(proposal.Refused, match="a record in two extra pairs with one member"):
        p.check("north", "west", 0, one, np.array([2], np.uint32), cuts)
    with pytest.raises(proposal.Refused, match="with a record in no proposed pair"):
        p.check("north", "west", 0, np.array([3], np.uint32), np.array([0], np.uint32), cuts)
    with pytest.raises(proposal.Refused, match=r"cutoffs: \[0.5\], but the run's are"):
        p.check("north", "west", 0, one, one, (0.5,))
    with pytest.raises(proposal.Refused, match="clk: 1, but the uploads have one CLK"):
        p.check("north", "west", 1, one, one, cuts)
    # A proposed pair by name, either way round: answered 0, not an extra.
    again = p.check("south", "north", 0, rows[:2], rows[:2], cuts)
    assert again.proposed.all() and again.extras == 0
    with pytest.raises(proposal.Refused, match="no pair beyond its proposal"):
        proposal.Proposal(names[:2], [4, 4], proposed[:1], cuts, None).check(
            "north", "south", 0, np.array([3], np.uint32), np.array([0], np.uint32), cuts
        )
    # With a fallback CLK, a pair named on the CLK it is not scored by is answered 0.
    lacking = [np.array([False, True, False, False])] * 3
    p = proposal.Proposal(names, [4, 4, 4], proposed, cuts, lacking)
    both = np.array([0, 1], np.uint32)
    on_record = p.check("north", "west", 0, both, both, cuts)
    assert on_record.proposed.tolist() == [False, True] and on_record.extras == 1
    assert proposal.run_cutoffs(0.8, ()) == (0.8,)
    with pytest.raises(proposal.Refused, match="the circuit's cut-offs are fixed"):
        proposal.run_cutoffs(0.8, (0.9,))


def test_a_combiner_without_popcounts_gives_the_dice_oracles_links(
    messy_members: tuple[list[Clks], int],
) -> None:
    """C as deployed, with no popcount and not knowing who lacks the fallback's fields (S1
    blocks by what the members told it; C names the pairs of its groups it does not know as
    links on both CLKs, S1 answering 0 on the other): the links are the Dice oracle's. (On
    this fixture every pair of a group is a candidate, so none is an extra: the extras'
    bounds are tested on core/proposal.py directly.)"""
    datasets, fallback_bits = messy_members
    plan = client.BandPlan(bits=20, bands=30)
    uploads = [client.shared_upload(d, SECRET, plan, fallback_bits) for d in datasets]
    s1, s2 = in_process_servers(uploads)
    servers = tworun.InProcess(s1, s2)
    got = tworun.drive(servers, twoserver.Combiner(None, THRESHOLD, clks=2))
    oracle = tworun.run(s1, s2, twoserver.Combiner([u.combiner.popcounts for u in uploads],
                                                   THRESHOLD, reveal="dice"))  # fmt: skip
    assert servers.proposal is not None and servers.proposal.lacking is not None
    assert got.method == oracle.method == "two-server+fallback"
    for name in ("dset", "row", "partner", "partner_row"):
        assert np.array_equal(getattr(got.links, name), getattr(oracle.links, name)), name


@pytest.mark.parametrize("bits,bands", [(20, 200), (8, 30)])
def test_s1s_sealed_join_and_s2s_expansion_propose_exactly_the_record_keys_pairs(
    messy_members: tuple[list[Clks], int], bits: int, bands: int
) -> None:
    """The candidate set is the one S1 proposed when it held every record's band keys (by
    pair of members and CLK, rows in order), and so are the links: the realistic fixture,
    three members, both CLKs, at the recommendation's width and at a narrow one (keys many
    records share)."""
    datasets, fallback_bits = messy_members
    plan = client.BandPlan(bits=bits, bands=bands)
    result, combiner, uploads = three_party(datasets, fallback_bits, plan)  # the Dice oracle's
    keys = [client.record_keys(d, SECRET, plan, fallback_bits) for d in datasets]
    want = twoserver.record_blocking(keys, combiner.lacking())
    got = {(b.member_a, b.member_b, b.clk): b for b in result.pairs}
    assert len(got) == len(want) == 6  # three pairs of members, two CLKs
    for batch in want:
        mine = got[batch.member_a, batch.member_b, batch.clk]
        assert np.array_equal(mine.rows_a, batch.rows_a)
        assert np.array_equal(mine.rows_b, batch.rows_b)
    assert result.comparisons > 300
    # The links are the run's where S1 blocked on every record's keys (the run before).
    before = RecordKeysServers(keys, uploads)
    pops = [u.combiner.popcounts for u in uploads]
    old = tworun.drive(before, twoserver.Combiner(pops, THRESHOLD, reveal="dice"),
                       batch_pairs=5000)  # fmt: skip
    assert len(old.links) > 100 and old.comparisons == result.comparisons
    assert_same_links(result.links, old.links)


def test_s1s_dummy_pairs_add_candidates_not_links(messy_members: tuple[list[Clks], int]) -> None:
    """S1's dummy pairs of tokens (core/twoblocking.py `join`) make S2 open pairs of rows that
    share no band: they are compared as candidates and change no link (the realistic fixture,
    three members, both CLKs, the recommendation's width; the Dice oracle's run, whose links
    the link-bit circuit's equal)."""
    datasets, fallback_bits = messy_members
    plan = client.BandPlan(bits=20, bands=200)
    plain, _, _ = three_party(datasets, fallback_bits, plan)
    noised, _, _ = three_party(datasets, fallback_bits, plan, dummies=0.05)
    assert noised.comparisons > 1.2 * plain.comparisons > 300
    codes = {}
    for name, run in (("plain", plain), ("noised", noised)):
        codes[name] = {
            (b.member_a, b.member_b, b.clk, int(i), int(j))
            for b in run.pairs
            for i, j in zip(b.rows_a, b.rows_b, strict=True)
        }
    assert codes["plain"] < codes["noised"]  # every real candidate, and the dummies' pairs
    # The links: the kernel's decisions on the pairs proposed, so the plain run's unless a
    # dummy landed on a pair at the threshold that no band found (then that one more link).
    assert_same_links(noised.links, plaintext_on(noised.pairs, datasets, fallback_bits))
    extra = sorted(codes["noised"] - codes["plain"])
    cut = datasets[0].shape[1] - fallback_bits // 8  # the record-level CLK, then the fallback
    part = [slice(0, cut), slice(cut, None)]
    a = [datasets[p[0]][p[3], part[p[2]]] for p in extra]
    b = [datasets[p[1]][p[4], part[p[2]]] for p in extra]
    dice = [2 * int(np.bitwise_count(x & y).sum())
            / max(int(np.bitwise_count(x).sum() + np.bitwise_count(y).sum()), 1)
            for x, y in zip(a, b, strict=True)]  # fmt: skip
    if max(dice, default=0.0) < THRESHOLD:  # no dummy pair at the threshold: the same links
        assert_same_links(noised.links, plain.links)


class RecordKeysServers(tworun.InProcess):
    """S1 blocking on every record's band keys (`record_blocking`, the run before the sealed
    join), S1 and S2 otherwise the real ones, on shares of the CLKs that `proposed` ran on."""

    def __init__(
        self, keys: list[tuple[npt.NDArray[np.uint64], ...]], uploads: list[client.SharedUpload]
    ) -> None:
        self.keys = keys
        key = secrets.token_bytes(32)
        s1 = twoserver.BlockingServer([[] for _ in keys], [u.s1.shares for u in uploads], key,
                                      [u.s1.popcounts for u in uploads])  # fmt: skip
        s2 = twoserver.ShareServer([u.s2.shares for u in uploads], key,
                                   [u.s2.popcounts for u in uploads])  # fmt: skip
        super().__init__(s1, s2)

    def block(
        self, lacking: list[npt.NDArray[np.bool_]] | None, cutoffs: tuple[float, ...] = ()
    ) -> list[twoserver.PairBatch]:
        return twoserver.record_blocking(self.keys, lacking)


def test_s1_holds_each_bands_distinct_keys_once_and_no_member_records_rows(
    messy_members: tuple[list[Clks], int],
) -> None:
    """What S1 receives of a CLK: each band's distinct keys once (one member's records that
    collide are one key), with tokens it cannot open: a key's rows padded to its size class,
    each in copies, every token different."""
    datasets, fallback_bits = messy_members
    plan = client.BandPlan(bits=8, bands=40)  # narrow bands: many records share a key
    up = client.shared_upload(datasets[0], SECRET, plan, fallback_bits)
    keys = client.record_keys(datasets[0], SECRET, plan, fallback_bits)
    n = len(datasets[0])
    for clk, sealed in enumerate(up.s1.bands):
        for band in range(plan.bands):
            lo, hi = int(sealed.counts[:band].sum()), int(sealed.counts[: band + 1].sum())
            assert np.array_equal(sealed.keys[lo:hi], np.unique(keys[clk][:, band]))
        assert len(sealed.keys) < 0.5 * keys[clk].size  # S1 no longer sees the duplicates
        tokens = sealed.sealed.reshape(-1, 16)
        assert len(np.unique(tokens, axis=0)) == len(tokens)  # no two tokens alike
        # S2 opens a key's tokens into its rows (slot by slot, each in its copies), then
        # padding; under another key, or as another CLK, they do not open.
        k = int(np.argmax(sealed.classes[: sealed.counts[0]]))  # band 0's most shared key
        held = np.flatnonzero(keys[clk][:, 0] == sealed.keys[k])
        cap = int(client.slots(sealed.classes[k : k + 1])[0])
        copy = int(client.copies(sealed.classes[k : k + 1])[0])
        at = int(sealed.offsets()[k]) // 16
        rows = twoblocking.open_tokens(up.s2.seal_key, clk, tokens[at : at + cap * copy], n, "a")
        want = np.concatenate([held, np.full(cap - len(held), -1)])
        assert cap >= len(held) > 1 and np.array_equal(rows, np.repeat(want, copy))
        for wrong_key, wrong_clk in ((bytes(32), clk), (up.s2.seal_key, 1 - clk)):
            with pytest.raises(ValueError, match="does not open"):
                twoblocking.open_tokens(wrong_key, wrong_clk, tokens[:4], n, "a")
    # Each key's tokens: 16 bytes x its slots x their copies (1, 4, 16, 64 ... slots; 2 to 16
    # copies).
    sizes = set(np.unique(np.diff(up.s1.bands[0].offsets())).tolist())
    assert sizes <= {16 * 4**c * min(max(4**c, 2), 16) for c in range(8)}


def test_s2_opens_each_token_once_and_cannot_tell_which_pairs_share_a_key(
    messy_members: tuple[list[Clks], int],
) -> None:
    """What S1 forwards to S2: pairs of tokens, each token in one pair only where the two
    keys' classes agree, all bands' in one order; they open into the pairs sharing a key, a
    pair once for each band it shares, and nothing else (no key, no band)."""
    datasets, fallback_bits = messy_members
    plan = client.BandPlan(bits=12, bands=40)
    a, b = (client.shared_upload(d, SECRET, plan, fallback_bits) for d in datasets[:2])
    sa, sb = (twoserver.Sealed(u.s1.bands[0].counts, u.s1.bands[0].keys, u.s1.bands[0].classes,
                               u.s1.bands[0].sealed) for u in (a, b))  # fmt: skip
    matched = twoserver.join(0, 1, 0, sa, sb)
    assert {f.name for f in dataclasses.fields(matched)} == {
        "member_a", "member_b", "clk", "tokens_a", "tokens_b"}  # fmt: skip
    ia, ib = twoblocking.matched_keys(sa, sb)
    same = client.slots(sa.classes[ia]) == client.slots(sb.classes[ib])
    assert same.mean() > 0.5  # most matched keys are of one class on both sides
    codes = twoblocking.expanded_pairs(matched, (a.s2.seal_key, b.s2.seal_key),
                                     (len(datasets[0]), len(datasets[1])))  # fmt: skip
    got, count = np.unique(codes, return_counts=True)
    keys = [client.record_keys(d, SECRET, plan, fallback_bits)[0] for d in datasets[:2]]
    shared = (keys[0][:, None, :] == keys[1][None, :, :]).sum(axis=2)  # (rows a, rows b)
    ra, rb = np.nonzero(shared)
    assert np.array_equal(got, (ra.astype(np.uint64) << np.uint64(32)) | rb.astype(np.uint64))
    assert np.array_equal(count, shared[ra, rb])  # a pair once a band it shares
    # A token is forwarded more than once only where the keys' classes differ.
    _, uses = np.unique(matched.tokens_a, axis=0, return_counts=True)
    assert (uses > 1).sum() <= int((~same).sum()) * 16


def test_an_upload_of_the_older_format_is_refused_naming_the_field(
    tmp_path: Path, messy_members: tuple[list[Clks], int]
) -> None:
    datasets, fallback_bits = messy_members
    up = client.shared_upload(datasets[0][:50], SECRET, client.BandPlan(20, 10), fallback_bits)
    client.write_shared(tmp_path, up)
    assert np.array_equal(client.read_shared(tmp_path).s1.bands[1].keys, up.s1.bands[1].keys)
    keys = client.record_keys(datasets[0][:50], SECRET, client.BandPlan(20, 10), fallback_bits)
    np.savez(tmp_path / "s1.npz", keys_0=keys[0], keys_1=keys[1], shares_0=up.s1.shares[0],
             shares_1=up.s1.shares[1])  # fmt: skip
    with pytest.raises(InputError, match=r"keys_0 is the older upload format.*encode again"):
        client.read_shared(tmp_path)
    client.write_shared(tmp_path, up)
    np.savez(tmp_path / "s2.npz", shares_0=up.s2.shares[0], shares_1=up.s2.shares[1])
    with pytest.raises(InputError, match="no seal_key"):
        client.read_shared(tmp_path)
