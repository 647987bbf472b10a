"""The trilateration attack's side of a large member B, held sparse (issue 18 (a) at 64,000
and 128,000 records).

trilateration.py scores every record b of B against every record q of B's people: a (|B|,
|B|) float32 matrix (16 GB at 64,000), beside the attacker's own (N, N) levels. Here (the
model's `near` set, trimodel.py `cross_graph`) the same scores are held only at each row's
entries: for every seeded record a of A that b is a candidate of (identity p), the attacker's
`near` records of highest Dice to p (p itself first), and b's blind seed. An entry's score is
the dense one's exactly (the signature, the seeds' terms, each row's mean over every q taken
out as `centred` does); a record of B is only ever claimed as one of its entries, so the
best and the runner-up of a row or a column are taken among entries: a q outside a row's
entries (no seeded candidate of b near it) is not scored. A record of A gains from B's
seeds alone, and B's seeds that touch A are the candidates of A's seeds, which is where
the entries are.

The blind start (the signature's most confident mutual best matches) is computed over the
whole (|B|, |B|) signature by blocks, on each distinct histogram of candidates' values once.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from blindmatch.client.tools.privacy.trimodel import (
    SAME,
    CombinerView,
    Floats,
    Model,
    expected_hist,
    level_counts,
    levels,
    view_hist,
)

CHUNK = 2_000_000  # entries expanded at once (each with its seeds' terms)
Found = list[tuple[float, int, int]]


def _segment_top2(
    score: Floats, starts: npt.NDArray[np.intp], n: int
) -> tuple[Floats, npt.NDArray[np.intp], Floats]:
    """For each of `n` segments of `score` (`starts` each one's first index, sorted; a segment
    may be empty): the top, its first index in `score`, the runner-up (-inf if none)."""
    top = np.full(n, -np.inf, np.float32)
    at = np.full(n, -1, np.intp)
    second = np.full(n, -np.inf, np.float32)
    if not len(score):
        return top, at, second
    ends = np.append(starts[1:], len(score))
    some = ends > starts
    seg = np.repeat(np.arange(n, dtype=np.int32), ends - starts)
    top[some] = np.maximum.reduceat(score, starts[some])
    hit = np.flatnonzero(score == top[seg])
    first, where = np.unique(seg[hit], return_index=True)
    at[first] = hit[where]
    masked = score.copy()
    masked[at[first]] = -np.inf
    second[some] = np.maximum.reduceat(masked, starts[some])
    return top, at, second


class SparseSide:
    """B's side of the attack (rows: records of B, columns: positions among `mine`, B's
    people), as trilateration.py's `Trilateration` is, held at entries (module docstring)."""

    def __init__(self, view: CombinerView, model: Model, mine: npt.NDArray[np.intp],
                 theirs: npt.NDArray[np.intp]) -> None:  # fmt: skip
        if model.near is None:
            raise ValueError("the model holds no nearest records (trimodel.py cross_graph)")
        self.view, self.model, self.mine = view, model, mine
        self.n, self.size = view.n_a, len(mine)
        key = f"expected {len(mine)} {len(theirs)}"
        if key not in model.cache:  # the same for every attack on this model's view
            model.cache[key] = expected_hist(model, mine, theirs)
        expected = model.cache[key]
        self.hist = view_hist(view)
        self.log_e = np.log(expected)
        self.sum_e = expected.sum(axis=1)
        # each row's mean over every column: the signature's, the seeds' terms', the base's
        self.row_mean = (self.hist @ self.log_e.mean(axis=0) - self.sum_e.mean()).astype(np.float64)
        self.base = np.zeros(self.size, np.float32)  # every seed's log P(not a candidate)
        lv = levels(view.dice) + 1  # stored + 1, never 0
        rows, cols = view.pairs[:, 0], view.pairs[:, 1]
        self.by_a = sp.csr_matrix((lv, (cols, rows)), shape=(view.n_b, view.n_a))
        self.by_b = sp.csr_matrix((lv, (rows, cols)), shape=(view.n_a, view.n_b))
        pos = np.full(model.level.shape[0], -1, np.intp)
        pos[mine] = np.arange(len(mine))
        self.pos = pos
        self.active = np.full(view.n_b, -1, np.intp)  # each seeded row of A's identity
        self.codes = np.empty(0, np.int64)  # entries: row * size + column, sorted
        self.vals = np.empty(0, np.float32)  # their scores less the base and the row mean
        self._by_column: npt.NDArray[np.intp] | None = None

    def _terms(self, lv: npt.NDArray[np.intp], ids: npt.NDArray[np.intp],
               cols: npt.NDArray[np.intp]) -> Floats:  # fmt: skip
        """A seed (identity `ids`) a candidate of row b at level `lv` adds to (b, column)."""
        level = self.model.level[ids, self.mine[cols]].astype(np.intp)
        return self.model.table[lv, level] + self.model.logit_pc[level]  # type: ignore[no-any-return]

    def _new_entries(self, codes: npt.NDArray[np.int64]) -> Floats:
        """New entries' scores: the signature and the terms of the seeds already held."""
        out = np.empty(len(codes), np.float32)
        for lo in range(0, len(codes), CHUNK // 16):
            part = codes[lo : lo + CHUNK // 16]
            rows, cols = part // self.size, part % self.size
            val = np.einsum("ij,ij->i", self.hist[rows], self.log_e[cols]) - self.sum_e[cols]
            sub = self.by_b[rows]
            ent = np.repeat(np.arange(len(part)), np.diff(sub.indptr))
            held = self.active[sub.indices] >= 0
            if held.any():
                ent, lv, ids = ent[held], sub.data[held] - 1, self.active[sub.indices[held]]
                t = self._terms(lv, ids, cols[ent])
                val += np.bincount(ent, weights=t, minlength=len(part))
            out[lo : lo + len(part)] = val
        return out

    def entries(self, codes: npt.NDArray[np.int64]) -> None:
        """Hold these entries too (their scores from what is held)."""
        new = np.setdiff1d(np.unique(codes), self.codes, assume_unique=True)
        if not len(new):
            return
        vals = self._new_entries(new)
        at = np.searchsorted(self.codes, new)
        self.codes = np.insert(self.codes, at, new)
        self.vals = np.insert(self.vals, at, vals)
        self._by_column = None

    def add(self, seeds_a: dict[int, int], sign: float = 1.0) -> None:
        """New seeds of A (row of A -> the attacker's record), or dropped ones (`sign` -1)."""
        if not seeds_a:
            return
        rows = np.array(list(seeds_a), dtype=np.intp)
        ids = np.array(list(seeds_a.values()), dtype=np.intp)
        log_miss, model = self.model.log_miss, self.model
        for lo in range(0, len(ids), 64):
            lev = model.level[np.ix_(ids[lo : lo + 64], self.mine)].astype(np.intp)
            self.base += sign * log_miss[lev].sum(axis=0)
        # each seed's terms' mean over every column, by the level of its candidate's value
        frac = level_counts(model.level, ids, self.mine) / self.size
        mean = frac @ (model.table + model.logit_pc[None, :]).T  # (seeds, level of value)
        cand = self.by_a[rows]
        seed = np.repeat(np.arange(len(rows)), np.diff(cand.indptr))
        b, lv = cand.indices, cand.data - 1
        np.add.at(self.row_mean, b, sign * mean[seed, lv])
        if sign > 0:
            near = self.pos[model.near[model.level.row_of[ids]]]  # type: ignore[index, union-attr]
            for lo in range(0, len(b), CHUNK // near.shape[1]):
                at = slice(lo, lo + CHUNK // near.shape[1])
                cols = near[seed[at]]
                codes = b[at, None].astype(np.int64) * self.size + cols
                self.entries(codes[cols >= 0])
            self.active[rows] = ids
        else:
            self.active[rows] = -1
        starts = np.searchsorted(self.codes, np.arange(self.n + 1, dtype=np.int64) * self.size)
        count = starts[b + 1] - starts[b]
        for lo in range(0, len(b), max(1, CHUNK // max(int(count.max(initial=1)), 1))):
            part = slice(lo, lo + max(1, CHUNK // max(int(count.max(initial=1)), 1)))
            each = count[part]
            pair = np.repeat(np.arange(len(each)), each)
            idx = np.repeat(starts[b[part]] - np.cumsum(np.r_[0, each[:-1]]), each)
            idx += np.arange(len(pair))
            t = self._terms(lv[part][pair], ids[seed[part]][pair], self.codes[idx] % self.size)
            np.add.at(self.vals, idx, (sign * t).astype(np.float32))

    def _scores(self) -> tuple[Floats, npt.NDArray[np.intp], npt.NDArray[np.intp]]:
        rows = (self.codes // self.size).astype(np.int32)
        cols = (self.codes % self.size).astype(np.int32)
        score = self.vals + self.base[cols]
        score -= (self.row_mean + self.base.mean()).astype(np.float32)[rows]
        return score, rows, cols  # type: ignore[return-value]

    def _best(self, score: Floats, cols: npt.NDArray[np.intp]) -> tuple[Any, ...]:
        """Each row's best entry and runner-up, each column's likewise (first on ties)."""
        starts = np.searchsorted(self.codes, np.arange(self.n, dtype=np.int64) * self.size)
        row_top, row_at, row_second = _segment_top2(score, starts, self.n)
        if self._by_column is None:
            self._by_column = np.argsort(cols, kind="stable").astype(np.int32)
        order = self._by_column
        c_starts = np.searchsorted(cols[order], np.arange(self.size))
        col_top, col_at, col_second = _segment_top2(score[order], c_starts, self.size)
        col_row = np.where(col_at >= 0, self.codes[order[col_at]] // self.size, -1)
        best_col = np.where(row_at >= 0, cols[row_at], -1)
        return row_top, best_col, row_second, col_top, col_row, col_second

    def mutual(self, seeds: dict[int, int], margin: float) -> Found:
        """trilateration.py `mutual_best` of these scores, over the entries."""
        score, rows, cols = self._scores()
        taken_r = np.zeros(self.n, bool)
        taken_r[list(seeds)] = True
        taken_c = np.zeros(self.size, bool)
        taken_c[list(seeds.values())] = True
        score[taken_r[rows] | taken_c[cols]] = -np.inf
        row_top, best_col, row_second, col_top, col_row, col_second = self._best(score, cols)
        ok = np.isfinite(row_top) & ~taken_r
        ok[ok] = col_row[best_col[ok]] == np.flatnonzero(ok)
        i = np.flatnonzero(ok)
        p = best_col[i]
        m = np.minimum(row_top[i] - row_second[i], col_top[p] - col_second[p])
        keep = m >= margin
        found = zip(m[keep].tolist(), i[keep].tolist(), p[keep].tolist(), strict=True)
        return sorted(found, reverse=True)

    def unstable(self, seeds: dict[int, int], fixed: set[int]) -> dict[int, int]:
        """trilateration.py `unstable`: found seeds no longer their row's and column's best."""
        score, _rows, cols = self._scores()
        _t, best_col, _s, _ct, col_row, _cs = self._best(score, cols)
        return {i: j for i, j in seeds.items()
                if i not in fixed and (best_col[i] != j or col_row[j] != i)}  # fmt: skip


def blind_best(side: SparseSide, seeds: dict[int, int], blind: int) -> Found:
    """`mutual_best` of B's centred signature (every row and column, by blocks of distinct
    histograms: rows of one histogram score alike), its `blind` most confident."""
    taken_r = np.zeros(side.n, bool)
    taken_r[list(seeds)] = True
    taken_c = np.zeros(side.size, bool)
    taken_c[list(seeds.values())] = True
    free = np.flatnonzero(~taken_r)
    uniq, first, count = np.unique(side.hist[free], axis=0, return_index=True,
                                   return_counts=True)  # fmt: skip
    first = free[first]
    mean = (uniq @ side.log_e.mean(axis=0) - side.sum_e.mean()).astype(np.float32)
    top_r = np.empty(len(uniq), np.float32)
    at_r = np.empty(len(uniq), np.intp)
    sec_r = np.empty(len(uniq), np.float32)
    top_c = np.full(side.size, -np.inf, np.float32)
    row_c = np.full(side.size, -1, np.intp)
    sec_c = np.full(side.size, -np.inf, np.float32)
    cols = np.arange(side.size)
    step = max(1, 8_000_000 // side.size)
    for lo in range(0, len(uniq), step):
        s = uniq[lo : lo + step] @ side.log_e.T
        s -= side.sum_e[None, :]
        s -= mean[lo : lo + step, None]
        s[:, taken_c] = -np.inf
        r = np.arange(len(s))
        j = np.argmax(s, axis=1)
        top_r[lo : lo + len(s)], at_r[lo : lo + len(s)] = s[r, j], j
        u = np.argmax(s, axis=0)
        top = s[u, cols]
        s[r, j] = -np.inf
        sec_r[lo : lo + len(s)] = s.max(axis=1)
        s[r, j] = top_r[lo : lo + len(s)]
        s[u, cols] = -np.inf
        second = np.maximum(s.max(axis=0), np.where(count[lo + u] > 1, top, -np.inf))
        better = (top > top_c) | ((top == top_c) & (first[lo + u] < row_c))
        sec_c = np.where(better, np.maximum(top_c, second), np.maximum(sec_c, top))
        top_c = np.where(better, top, top_c)
        row_c = np.where(better, first[lo + u], row_c)
    mutual = np.isfinite(top_r) & (row_c[at_r] == first)
    out = []
    for k in np.flatnonzero(mutual):
        p = at_r[k]
        m = min(top_r[k] - sec_r[k], top_c[p] - sec_c[p])
        if m >= 0.0:
            out.append((float(m), int(first[k]), int(p)))
    return sorted(out, reverse=True)[:blind]


__all__ = ["SAME", "SparseSide", "blind_best"]
