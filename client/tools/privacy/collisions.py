"""The collision attack: the attack built for a view of counts between one member's records.

A view that tells, for a pair (i, j) of one member's records, c_ij: the number of bands whose
keys the two share (a blocking server holding every record's band keys; or S2 of a two-server
run where it opens a token of the other member twice, linking two of this member's rows:
matcher/core/twoviews.py). A band of r bit positions collides for a pair that agrees on A of
the M bits bands draw from with chance P(A) = prod_{k<r} (A - k) / (M - k) (positions drawn
from the secret are unknown to the attacker, so it averages over them), so c_ij ~ Poisson(L *
P(A_ij)) for L bands. The attacker holds plaintext on the same people, encodes it under its
own key with the public schema, and computes for each pair of its own records (p, q) the
expected count lambda_pq (`expected_counts`). Seeds (known pairs, or blind ones from each
record's degree: `blind_seeds`) then propagate (`attack`): the log-likelihood that victim
record i is attacker record p is the sum over seeds (k, s) of c_ik log lambda_ps - lambda_ps;
each round the mutual best matches at a margin join the seeds.

Pure numpy and scipy: `privacy-check --mode two-server` (twocheck.py) and
benchmarks/collision_attack.py run it.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from blindmatch.client.tools.privacy.trilateration import mutual_best

Floats = npt.NDArray[np.float32]
View = tuple[sp.csr_matrix, Floats]  # one CLK's view: counts c, expected counts lambda


def expected_counts(
    clks: npt.NDArray[np.uint8], r: int, bands: int, mask: npt.NDArray[np.bool_] | None = None
) -> Floats:
    """The attacker's model: lambda_pq = L * prod_{k<r} (A_pq - k) / (M - k), A_pq the
    agreements of its own encodings of p and q on its M bits that bands draw from (`mask`;
    None: every bit, as the shipped client draws them)."""
    bits = np.unpackbits(np.ascontiguousarray(clks), axis=1, bitorder="little")
    x = (bits if mask is None else bits[:, mask]).astype(np.float32)
    m = x.shape[1]
    ones = x.sum(axis=1)
    agree = m - (ones[:, None] + ones[None, :] - 2 * (x @ x.T))
    p = np.ones_like(agree)
    for k in range(r):
        p *= np.clip(agree - k, 0, None) / (m - k)
    lam = (bands * p).astype(np.float32)
    np.fill_diagonal(lam, 0)
    return np.maximum(lam, 1e-6)


class Propagation:
    """Poisson log-likelihood scores of (victim i, attacker p), summed over the seeds."""

    def __init__(self, views: list[View]) -> None:
        # Against a background: each seed's expected counts relative to their mean over the
        # attacker's records (log-likelihood ratios), so that scores compare across victim
        # records as well as across attacker records (the row order is unchanged). Several
        # views (a record's band keys of its record-level and of its fallback CLK, which the
        # blocking server holds side by side) add their terms: independent Poisson counts.
        self.parts = []
        for c, lam in views:
            mean = lam.mean(axis=1, keepdims=True)
            self.parts.append((c, lam - mean, np.log(lam) - np.log(mean)))
        # victim records x the attacker's (more victim rows than attacker records where the
        # victim's rows hold decoys the attacker has no plaintext of)
        self.score = np.zeros((views[0][0].shape[0], views[0][1].shape[0]), dtype=np.float32)
        self.seeds: dict[int, int] = {}

    def add(self, pairs: dict[int, int]) -> None:
        new = {i: p for i, p in pairs.items() if i not in self.seeds}
        if not new:
            return
        iv, pa = np.array(list(new)), np.array(list(new.values()))
        self.score += self._term(iv, pa)
        self.seeds.update(new)

    def _term(self, iv: npt.NDArray[np.intp], pa: npt.NDArray[np.intp]) -> Floats:
        """Seeds (iv -> pa)'s contribution to every score. The counts are sparse (a few % of
        pairs collide), so the product runs on the sparse columns, in blocks."""
        out = np.zeros_like(self.score)
        for c, lam, log_lam in self.parts:
            for k in range(0, len(iv), 500):
                cols = c[:, iv[k : k + 500]]
                out += np.asarray(cols @ log_lam[pa[k : k + 500]], dtype=np.float32)
                out -= lam[pa[k : k + 500]].sum(axis=0)[None, :]
        return out

    def remove(self, victims: list[int]) -> None:
        if not victims:
            return
        iv = np.array(victims)
        pa = np.array([self.seeds[i] for i in victims])
        self.score -= self._term(iv, pa)
        for i in victims:
            del self.seeds[i]

    def unstable(self, fixed: set[int]) -> list[int]:
        """Found seeds (not in `fixed`) that are no longer each other's best match against
        every record, seeded or not."""
        best_p = np.argmax(self.score, axis=1)
        best_i = np.argmax(self.score, axis=0)
        return [
            i
            for i, p in self.seeds.items()
            if i not in fixed and (best_p[i] != p or best_i[p] != i)
        ]

    def mutual(self, margin: float) -> list[tuple[float, int, int]]:
        """Mutual best (i, p) among records not yet seeded, with their margin in nats."""
        return mutual_best(self.score, self.seeds, margin)


def blind_seeds(c: sp.csr_matrix, lam: Floats, count: int) -> dict[int, int]:
    """Seeds without a known pair: degree and number of records collided with twice or more,
    against their Poisson expectations, matched by margin."""
    deg = np.asarray(c.sum(axis=1)).ravel()
    twice = np.asarray((c >= 2).sum(axis=1)).ravel()
    exp_deg = lam.sum(axis=1)
    p2 = 1 - np.exp(-lam) * (1 + lam)
    exp_twice = p2.sum(axis=1)
    ll = (
        deg[:, None] * np.log(exp_deg)[None, :] - exp_deg[None, :]
        + twice[:, None] * np.log(np.maximum(exp_twice, 1e-6))[None, :] - exp_twice[None, :]
    )  # fmt: skip
    chosen: dict[int, int] = {}
    used: set[int] = set()
    top2 = np.partition(ll, -2, axis=1)[:, -2:]
    order = np.argsort(-(top2[:, 1] - top2[:, 0]))
    for i in order:
        p = int(np.argmax(ll[i]))
        if p not in used:
            chosen[int(i)] = p
            used.add(p)
        if len(chosen) == count:
            break
    return chosen


def attack(
    views: list[View], start: dict[int, int], margin: float, cap: int,
    robust: bool = False, fixed: set[int] | None = None,
) -> dict[int, int]:  # fmt: skip
    """Propagate from `start`. `robust`: each round takes the most confident half as many new
    mutual best matches as there are seeds whatever their margin, then drops found seeds (and
    start seeds not in `fixed`: blind ones) that are no longer mutual best matches (the
    self-correcting growth of graph.py's `_grow`); it stops after three rounds that add
    nothing net, or 60 rounds.
    The seeds' terms are sparse products (counts are nonzero for a few % of pairs), which is
    what lets it finish at 10^4 records."""
    prop = Propagation(views)
    prop.add(start)
    if fixed is None:
        fixed = set(start) if not robust or len(start) >= 50 else set()
    stalled = 0
    for _round in range(200 if not robust else 60):
        if len(prop.seeds) >= cap:
            break
        found = prop.mutual(0.0 if robust else margin)
        if not found:
            break
        take = found[: max(10, len(prop.seeds) // (2 if robust else 1))]
        before = len(prop.seeds)
        prop.add({i: p for _m, i, p in take})
        if robust:
            prop.remove(prop.unstable(fixed))
            stalled = stalled + 1 if len(prop.seeds) <= before else 0
            if stalled == 3:
                break
    claims = dict(prop.seeds)
    claims.update({i: p for _m, i, p in prop.mutual(margin)})
    return claims


__all__ = ["View", "attack", "blind_seeds", "expected_counts"]
