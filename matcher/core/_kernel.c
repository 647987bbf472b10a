/*
 * matcher._kernel: Dice similarity of CLKs, native.
 *
 * Two functions, both pure (buffers in, bytes out) and both run without the GIL
 * so that Python threads can split the work:
 *
 *   dense(a, b, words, threshold, path) -> (sims, rows_a, rows_b)
 *       every pair of a row of `a` and a row of `b` whose Dice similarity is at
 *       least `threshold`, exactly as anonlink's dice_coefficient_accelerated
 *       finds them (same popcount pre-filter, same score arithmetic).
 *   pairs(a, b, words, ia, ib, threshold) -> (sims, positions)
 *       the same test for given pairs (ia[k], ib[k]); returns the positions k
 *       that pass. Used after blocking.
 *
 * `a` and `b` are C-contiguous bytes of whole CLKs, `words` 64-bit words each.
 * Results come back as bytes (float64, uint32, uint32) for numpy.frombuffer.
 *
 * How `dense` is fast: both inputs are sorted by popcount (a counting sort), so
 * for a tile of 8 rows of `a` the rows of `b` that can pass the popcount bound
 * |pa - pb| <= 2 pa (1/t - 1) form one contiguous run; `b` is stored as blocks of
 * 8 rows, word-major, so one 512-bit vector holds the same word of 8 rows and
 * the AND + VPOPCNTQ + add of a word needs no horizontal sums. A vector
 * comparison with a slightly lowered threshold picks the lanes worth a look;
 * each of those is then decided by the exact scalar anonlink test.
 *
 * Paths, chosen at run time: "avx512" (AVX-512F/DQ + VPOPCNTDQ), "popcnt"
 * (scalar POPCNT), "generic" (portable C). "auto" picks the best this CPU has.
 */
#define _GNU_SOURCE
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pthread.h>
#if defined(__linux__)
#include <sched.h>
#define BM_AFFINITY 1 /* pthread_attr_setaffinity_np: threads placed on given CPUs */
#else
#define BM_AFFINITY 0 /* elsewhere the look-up threads run wherever the OS puts them */
#endif

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define BM_X86 1
#else
#define BM_X86 0
#endif

/* ---- growable output ------------------------------------------------------ */

typedef struct {
    double *sims;
    uint32_t *ia;
    uint32_t *ib;
    size_t n, cap;
    int failed;
} out_t;

static void out_push(out_t *o, double s, uint32_t i, uint32_t j) {
    if (o->n == o->cap) {
        size_t cap = o->cap ? o->cap * 2 : 1024;
        double *ns = realloc(o->sims, cap * sizeof(double));
        if (ns) o->sims = ns;
        uint32_t *ni = realloc(o->ia, cap * sizeof(uint32_t));
        if (ni) o->ia = ni;
        uint32_t *nj = realloc(o->ib, cap * sizeof(uint32_t));
        if (nj) o->ib = nj;
        if (!ns || !ni || !nj) {
            o->failed = 1;
            return;
        }
        o->cap = cap;
    }
    o->sims[o->n] = s;
    o->ia[o->n] = i;
    o->ib[o->n] = j;
    o->n++;
}

static void out_free(out_t *o) {
    free(o->sims);
    free(o->ia);
    free(o->ib);
}

/* ---- anonlink's test, exactly --------------------------------------------- */

/* anonlink: max_popcnt_delta = 2 * popcnt_a * (1/threshold - 1), truncated to
 * uint32; every difference passes when the threshold is not positive. */
static inline uint32_t max_delta(uint32_t pa, double t, uint32_t bits) {
    if (!(t > 0)) return bits;
    double d = (double)(2u * pa) * (1.0 / t - 1.0);
    if (d >= (double)bits) return bits;
    return (uint32_t)d;
}

/* anonlink: skip when |pa - pb| > delta; score = (2 * c) / (double)(pa + pb);
 * keep when score >= threshold. (pa > 0 here: empty rows are handled apart.) */
static inline int passes(uint32_t c, uint32_t pa, uint32_t pb, uint32_t delta, double t,
                         double *score) {
    uint32_t d = pa > pb ? pa - pb : pb - pa;
    if (d > delta) return 0;
    double s = (double)(2u * c) / (double)(pa + pb);
    if (!(s >= t)) return 0;
    *score = s;
    return 1;
}

/* ---- popcounts and the counting sort --------------------------------------- */

static uint32_t popcount_row(const uint64_t *r, size_t w) {
    uint32_t c = 0;
    for (size_t k = 0; k < w; k++) c += (uint32_t)__builtin_popcountll(r[k]);
    return c;
}

/* perm[k] = original index of the k-th row in increasing popcount order. */
static int sort_by_popcount(const uint32_t *pc, size_t n, uint32_t bits, uint32_t *perm) {
    size_t *start = calloc((size_t)bits + 2, sizeof(size_t));
    if (!start) return -1;
    for (size_t i = 0; i < n; i++) start[pc[i] + 1]++;
    for (uint32_t v = 0; v <= bits; v++) start[v + 1] += start[v];
    for (size_t i = 0; i < n; i++) perm[start[pc[i]]++] = (uint32_t)i;
    free(start);
    return 0;
}

/* First index in sorted `v[0..n)` with v >= x. */
static size_t lower_bound(const uint32_t *v, size_t n, uint32_t x) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (v[mid] < x) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

/* ---- the dense problem, prepared ------------------------------------------- */

typedef struct {
    size_t w;         /* words per CLK */
    uint32_t bits;    /* bits per CLK */
    double t;
    size_t na, nb;    /* rows with a non-zero popcount (a) / all rows (b) */
    const uint64_t *a, *b;
    uint32_t *pa_s, *pb_s;   /* popcounts in sorted order */
    uint32_t *perm_a, *perm_b;
} dense_t;

/* The rows of sorted b (a range [lo, hi)) that can pass the bound for a row of
 * popcount pa. */
static inline void b_range(const dense_t *d, uint32_t pa, size_t *lo, size_t *hi) {
    uint32_t delta = max_delta(pa, d->t, d->bits);
    uint32_t low = pa > delta ? pa - delta : 0;
    uint64_t high = (uint64_t)pa + delta;
    *lo = lower_bound(d->pb_s, d->nb, low);
    *hi = high >= d->bits ? d->nb : lower_bound(d->pb_s, d->nb, (uint32_t)high + 1);
}

/* Scalar paths: one sorted row of a against its run of sorted b (`bs`, the rows
 * of b copied in popcount order so that the run is read sequentially). */
static inline __attribute__((always_inline)) void scalar_rows(const dense_t *d,
                                                               const uint64_t *bs, size_t w,
                                                               out_t *o) {
    for (size_t x = 0; x < d->na; x++) {
        uint32_t i = d->perm_a[x], pa = d->pa_s[x];
        uint32_t delta = max_delta(pa, d->t, d->bits);
        const uint64_t *ra = d->a + (size_t)i * w;
        size_t lo, hi;
        b_range(d, pa, &lo, &hi);
        for (size_t y = lo; y < hi; y++) {
            const uint64_t *rb = bs + y * w;
            uint64_t c0 = 0, c1 = 0, c2 = 0, c3 = 0;
            size_t k = 0;
            for (; k + 4 <= w; k += 4) {
                c0 += (uint64_t)__builtin_popcountll(ra[k] & rb[k]);
                c1 += (uint64_t)__builtin_popcountll(ra[k + 1] & rb[k + 1]);
                c2 += (uint64_t)__builtin_popcountll(ra[k + 2] & rb[k + 2]);
                c3 += (uint64_t)__builtin_popcountll(ra[k + 3] & rb[k + 3]);
            }
            for (; k < w; k++) c0 += (uint64_t)__builtin_popcountll(ra[k] & rb[k]);
            double s;
            if (passes((uint32_t)(c0 + c1 + c2 + c3), pa, d->pb_s[y], delta, d->t, &s))
                out_push(o, s, i, d->perm_b[y]);
        }
    }
}

static uint64_t *sorted_b(const dense_t *d) {
    uint64_t *bs = malloc(d->nb * d->w * 8 + 8);
    if (!bs) return NULL;
    for (size_t y = 0; y < d->nb; y++)
        memcpy(bs + y * d->w, d->b + (size_t)d->perm_b[y] * d->w, d->w * 8);
    return bs;
}

/* 1024-bit CLKs (clkhash's usual size) get a copy with the length fixed at
 * compile time. */
#define SCALAR_PATH(name, attrs)                                          \
    attrs static int name(const dense_t *d, out_t *o) {                   \
        uint64_t *bs = sorted_b(d);                                       \
        if (!bs) return -1;                                               \
        if (d->w == 16) scalar_rows(d, bs, 16, o);                        \
        else scalar_rows(d, bs, d->w, o);                                 \
        free(bs);                                                         \
        return 0;                                                         \
    }

SCALAR_PATH(dense_generic, )

#if BM_X86
SCALAR_PATH(dense_popcnt, __attribute__((target("popcnt"))))

#define TILE_A 8           /* rows of a per tile */
#define SUPER_BLOCKS 128   /* blocks of 8 rows of b per cache block (128 KiB at 1024 bits) */

__attribute__((target("avx512f,avx512dq,avx512vpopcntdq")))
static int dense_avx512(const dense_t *d, out_t *o) {
    size_t w = d->w, nb = d->nb, nblk = (nb + 7) / 8;
    /* b, sorted, as blocks of 8 rows, word-major; padded lanes are zero. */
    uint64_t *bt = aligned_alloc(64, nblk * w * 64 + 64);
    double *hb = aligned_alloc(64, nblk * 64 + 64);
    if (!bt || !hb) {
        free(bt);
        free(hb);
        return -1;
    }
    memset(bt, 0, nblk * w * 64);
    /* Lanes worth an exact look: c >= h (pa + pb), h a hair under t/2, so the
     * vector test never drops a pair the exact test would keep. */
    double h = d->t * (1.0 - 1e-9) / 2.0;
    for (size_t y = 0; y < nblk * 8; y++) {
        if (y < nb) {
            const uint64_t *rb = d->b + (size_t)d->perm_b[y] * w;
            for (size_t k = 0; k < w; k++) bt[((y / 8) * w + k) * 8 + y % 8] = rb[k];
            hb[y] = h * d->pb_s[y];
        } else {
            hb[y] = INFINITY; /* padding never passes */
        }
    }
    for (size_t sb = 0; sb < nblk; sb += SUPER_BLOCKS) {
        size_t sb_end = sb + SUPER_BLOCKS < nblk ? sb + SUPER_BLOCKS : nblk;
        for (size_t x0 = 0; x0 < d->na; x0 += TILE_A) {
            size_t nr = d->na - x0 < TILE_A ? d->na - x0 : TILE_A;
            /* The run of b any row of the tile can reach (popcounts sorted: the
             * union of the rows' runs is within [first lo, last hi)). */
            size_t lo = SIZE_MAX, hi = 0;
            for (size_t r = 0; r < nr; r++) {
                size_t l, u;
                b_range(d, d->pa_s[x0 + r], &l, &u);
                if (l < u) {
                    if (l < lo) lo = l;
                    if (u > hi) hi = u;
                }
            }
            if (lo >= hi) continue;
            size_t k0 = lo / 8, k1 = (hi + 7) / 8;
            if (k0 < sb) k0 = sb;
            if (k1 > sb_end) k1 = sb_end;
            if (k0 >= k1) continue;
            const uint64_t *ra[TILE_A];
            __m512d ha[TILE_A];
            uint32_t delta[TILE_A];
            for (size_t r = 0; r < TILE_A; r++) {
                size_t x = x0 + (r < nr ? r : 0);
                ra[r] = d->a + (size_t)d->perm_a[x] * w;
                ha[r] = _mm512_set1_pd(r < nr ? h * d->pa_s[x] : INFINITY);
                delta[r] = max_delta(d->pa_s[x], d->t, d->bits);
            }
            for (size_t blk = k0; blk < k1; blk++) {
                const uint64_t *col = bt + blk * w * 8;
                __m512i acc[TILE_A];
                for (size_t r = 0; r < TILE_A; r++) acc[r] = _mm512_setzero_si512();
                for (size_t k = 0; k < w; k++) {
                    __m512i bv = _mm512_load_si512((const void *)(col + k * 8));
                    for (size_t r = 0; r < TILE_A; r++) {
                        __m512i av = _mm512_set1_epi64((long long)ra[r][k]);
                        acc[r] = _mm512_add_epi64(
                            acc[r], _mm512_popcnt_epi64(_mm512_and_si512(av, bv)));
                    }
                }
                __m512d hbv = _mm512_load_pd(hb + blk * 8);
                for (size_t r = 0; r < TILE_A; r++) {
                    __m512d thr = _mm512_add_pd(ha[r], hbv);
                    __mmask8 m = _mm512_cmp_pd_mask(_mm512_cvtepi64_pd(acc[r]), thr, _CMP_GE_OQ);
                    if (!m) continue;
                    uint64_t counts[8];
                    _mm512_storeu_si512((void *)counts, acc[r]);
                    size_t x = x0 + r;
                    while (m) {
                        int lane = __builtin_ctz(m);
                        m &= (__mmask8)(m - 1);
                        size_t y = blk * 8 + (size_t)lane;
                        double s;
                        if (passes((uint32_t)counts[lane], d->pa_s[x], d->pb_s[y], delta[r],
                                   d->t, &s))
                            out_push(o, s, d->perm_a[x], d->perm_b[y]);
                    }
                }
            }
        }
    }
    free(bt);
    free(hb);
    return 0;
}
#endif

static int have_avx512(void) {
#if BM_X86
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512vpopcntdq");
#else
    return 0;
#endif
}

static int have_popcnt(void) {
#if BM_X86
    __builtin_cpu_init();
    return __builtin_cpu_supports("popcnt");
#else
    return 0;
#endif
}

static const char *best_path(void) {
    if (have_avx512()) return "avx512";
    if (have_popcnt()) return "popcnt";
    return "generic";
}

/* ---- Python glue ------------------------------------------------------------ */

static PyObject *results(out_t *o, int with_b) {
    if (o->failed) {
        out_free(o);
        return PyErr_NoMemory();
    }
    PyObject *s = PyBytes_FromStringAndSize((const char *)o->sims, (Py_ssize_t)(o->n * 8));
    PyObject *i = PyBytes_FromStringAndSize((const char *)o->ia, (Py_ssize_t)(o->n * 4));
    PyObject *j = with_b ? PyBytes_FromStringAndSize((const char *)o->ib, (Py_ssize_t)(o->n * 4))
                         : NULL;
    out_free(o);
    if (!s || !i || (with_b && !j)) {
        Py_XDECREF(s);
        Py_XDECREF(i);
        Py_XDECREF(j);
        return NULL;
    }
    return with_b ? Py_BuildValue("(NNN)", s, i, j) : Py_BuildValue("(NN)", s, i);
}

static int check_clks(Py_buffer *v, size_t w, const char *name, size_t *rows) {
    if (v->len % (Py_ssize_t)(w * 8)) {
        PyErr_Format(PyExc_ValueError, "%s: %zd bytes is not a whole number of %zu-word CLKs",
                     name, v->len, w);
        return -1;
    }
    *rows = (size_t)v->len / (w * 8);
    if (*rows > UINT32_MAX) {
        PyErr_Format(PyExc_ValueError, "%s: too many rows", name);
        return -1;
    }
    return 0;
}

static PyObject *py_dense(PyObject *self, PyObject *args) {
    Py_buffer va, vb;
    Py_ssize_t words;
    double t;
    const char *path = "auto";
    if (!PyArg_ParseTuple(args, "y*y*nd|s", &va, &vb, &words, &t, &path)) return NULL;
    PyObject *ret = NULL;
    size_t w = (size_t)words, na = 0, nb = 0;
    out_t o = {0};
    dense_t d = {0};
    uint32_t *pa = NULL;
    int rc = 0;
    if (words <= 0 || words > (1 << 20)) {
        PyErr_SetString(PyExc_ValueError, "words must be positive");
        goto done;
    }
    if (check_clks(&va, w, "a", &na) || check_clks(&vb, w, "b", &nb)) goto done;
    if (strcmp(path, "auto") == 0) path = best_path();
    if (strcmp(path, "avx512") == 0 ? !have_avx512()
        : strcmp(path, "popcnt") == 0 ? !have_popcnt()
        : strcmp(path, "generic") != 0) {
        PyErr_Format(PyExc_ValueError, "path %s is not available on this CPU", path);
        goto done;
    }
    if (((uintptr_t)va.buf % 8) || ((uintptr_t)vb.buf % 8)) {
        PyErr_SetString(PyExc_ValueError, "a and b must be 8-byte aligned");
        goto done;
    }
    d.w = w;
    d.bits = (uint32_t)(w * 64);
    d.t = t;
    d.a = va.buf;
    d.b = vb.buf;
    Py_BEGIN_ALLOW_THREADS
    pa = calloc(na + 1, sizeof(uint32_t));
    d.pa_s = malloc((na + 1) * sizeof(uint32_t));
    d.pb_s = malloc((nb + 1) * sizeof(uint32_t));
    d.perm_a = malloc((na + 1) * sizeof(uint32_t));
    d.perm_b = malloc((nb + 1) * sizeof(uint32_t));
    if (!pa || !d.pa_s || !d.pb_s || !d.perm_a || !d.perm_b) rc = -1;
    if (!rc) {
        for (size_t j = 0; j < nb; j++) d.pb_s[j] = popcount_row(d.b + j * w, w);
        /* pb_s holds popcounts in original order for now: sort, then permute. */
        rc = sort_by_popcount(d.pb_s, nb, d.bits, d.perm_b);
    }
    if (!rc) {
        uint32_t *tmp = malloc((nb + 1) * sizeof(uint32_t));
        if (!tmp) rc = -1;
        else {
            for (size_t y = 0; y < nb; y++) tmp[y] = d.pb_s[d.perm_b[y]];
            free(d.pb_s);
            d.pb_s = tmp;
        }
    }
    if (!rc) {
        for (size_t i = 0; i < na; i++) pa[i] = popcount_row(d.a + i * w, w);
        rc = sort_by_popcount(pa, na, d.bits, d.perm_a);
    }
    if (!rc) {
        /* Rows of a with no bits set: anonlink scores them 0.0 against every
         * row of b when the threshold is not positive, and skips them otherwise. */
        size_t empty = 0;
        while (empty < na && pa[d.perm_a[empty]] == 0) empty++;
        if (!(t > 0))
            for (size_t x = 0; x < empty; x++)
                for (size_t j = 0; j < nb; j++) out_push(&o, 0.0, d.perm_a[x], (uint32_t)j);
        memmove(d.perm_a, d.perm_a + empty, (na - empty) * sizeof(uint32_t));
        d.na = na - empty;
        d.nb = nb;
        for (size_t x = 0; x < d.na; x++) d.pa_s[x] = pa[d.perm_a[x]];
        if (nb && d.na) {
#if BM_X86
            if (strcmp(path, "avx512") == 0) rc = dense_avx512(&d, &o);
            else if (strcmp(path, "popcnt") == 0) rc = dense_popcnt(&d, &o);
            else rc = dense_generic(&d, &o);
#else
            rc = dense_generic(&d, &o);
#endif
        }
    }
    Py_END_ALLOW_THREADS
    if (rc) {
        out_free(&o);
        PyErr_NoMemory();
        goto done;
    }
    ret = results(&o, 1);
done:
    free(pa);
    free(d.pa_s);
    free(d.pb_s);
    free(d.perm_a);
    free(d.perm_b);
    PyBuffer_Release(&va);
    PyBuffer_Release(&vb);
    return ret;
}

static PyObject *py_pairs(PyObject *self, PyObject *args) {
    Py_buffer va, vb, vi, vj;
    Py_ssize_t words;
    double t;
    if (!PyArg_ParseTuple(args, "y*y*ny*y*d", &va, &vb, &words, &vi, &vj, &t)) return NULL;
    PyObject *ret = NULL;
    size_t w = (size_t)words, na = 0, nb = 0, n = (size_t)vi.len / 4;
    out_t o = {0};
    if (words <= 0) {
        PyErr_SetString(PyExc_ValueError, "words must be positive");
        goto done;
    }
    if (check_clks(&va, w, "a", &na) || check_clks(&vb, w, "b", &nb)) goto done;
    if (vi.len != vj.len || vi.len % 4) {
        PyErr_SetString(PyExc_ValueError, "ia and ib must be uint32 arrays of one length");
        goto done;
    }
    const uint32_t *ia = vi.buf, *ib = vj.buf;
    for (size_t k = 0; k < n; k++)
        if (ia[k] >= na || ib[k] >= nb) {
            PyErr_Format(PyExc_IndexError, "pair %zu is out of range", k);
            goto done;
        }
    const uint64_t *a = va.buf, *b = vb.buf;
    uint32_t bits = (uint32_t)(w * 64);
    Py_BEGIN_ALLOW_THREADS
    for (size_t k = 0; k < n; k++) {
        const uint64_t *ra = a + (size_t)ia[k] * w, *rb = b + (size_t)ib[k] * w;
        uint32_t pa = 0, pb = 0, c = 0;
        for (size_t x = 0; x < w; x++) {
            pa += (uint32_t)__builtin_popcountll(ra[x]);
            pb += (uint32_t)__builtin_popcountll(rb[x]);
            c += (uint32_t)__builtin_popcountll(ra[x] & rb[x]);
        }
        double s;
        if (pa == 0) {
            if (!(t > 0)) out_push(&o, 0.0, (uint32_t)k, 0);
        } else if (passes(c, pa, pb, max_delta(pa, t, bits), t, &s)) {
            out_push(&o, s, (uint32_t)k, 0);
        }
    }
    Py_END_ALLOW_THREADS
    ret = results(&o, 0);
done:
    PyBuffer_Release(&va);
    PyBuffer_Release(&vb);
    PyBuffer_Release(&vi);
    PyBuffer_Release(&vj);
    return ret;
}

/* ---- every given pair's Dice, no threshold ------------------------------------
 *
 * dice_each(a, b, words, ia, ib, out)
 *     out[k] = Dice(a[ia[k]], b[ib[k]]) = 2 |a & b| / (|a| + |b|) as float64, 0.0 where
 *     both rows are empty: what solve.dice computes in numpy, bit for bit (the rule's D1
 *     and D2 of a run's candidates, fallback._rule_scores). `out` is a writable float64
 *     buffer of len(ia) items. */
static inline double dice_of(uint32_t pa, uint32_t pb, uint32_t c) {
    return pa + pb ? (2.0 * (double)c) / (double)(pa + pb) : 0.0;
}

/* The rows of the pair EACH_AHEAD on are asked for while this one is scored: the pairs'
 * rows are all over memory, and waiting on them is most of the time. */
#define EACH_AHEAD 8
static inline void each_prefetch(const uint64_t *a, const uint64_t *b, size_t w, uint32_t i,
                                 uint32_t j) {
    for (size_t x = 0; x < w; x += 8) {
        __builtin_prefetch(a + (size_t)i * w + x);
        __builtin_prefetch(b + (size_t)j * w + x);
    }
}

#define EACH_PATH(name, attrs)                                                              \
    attrs static void name(const uint64_t *a, const uint64_t *b, size_t w,                \
                           const uint32_t *ia, const uint32_t *ib, size_t n, double *out) { \
        for (size_t k = 0; k < n; k++) {                                                  \
            const uint64_t *ra = a + (size_t)ia[k] * w, *rb = b + (size_t)ib[k] * w;      \
            if (k + EACH_AHEAD < n)                                                       \
                each_prefetch(a, b, w, ia[k + EACH_AHEAD], ib[k + EACH_AHEAD]);           \
            uint32_t pa = 0, pb = 0, c = 0;                                               \
            for (size_t x = 0; x < w; x++) {                                              \
                pa += (uint32_t)__builtin_popcountll(ra[x]);                              \
                pb += (uint32_t)__builtin_popcountll(rb[x]);                              \
                c += (uint32_t)__builtin_popcountll(ra[x] & rb[x]);                       \
            }                                                                             \
            out[k] = dice_of(pa, pb, c);                                                  \
        }                                                                                 \
    }

EACH_PATH(each_generic, )
#if BM_X86
EACH_PATH(each_popcnt, __attribute__((target("popcnt"))))

/* w a multiple of 8: rows of whole 512-bit vectors; the three counts in one vector each. */
__attribute__((target("avx512f,avx512dq,avx512vpopcntdq")))
static void each_avx512(const uint64_t *a, const uint64_t *b, size_t w, const uint32_t *ia,
                        const uint32_t *ib, size_t n, double *out) {
    size_t v = w / 8;
    for (size_t k = 0; k < n; k++) {
        const uint64_t *ra = a + (size_t)ia[k] * w, *rb = b + (size_t)ib[k] * w;
        if (k + EACH_AHEAD < n) each_prefetch(a, b, w, ia[k + EACH_AHEAD], ib[k + EACH_AHEAD]);
        __m512i sa = _mm512_setzero_si512(), sb = sa, sc = sa;
        for (size_t x = 0; x < v; x++) {
            __m512i va = _mm512_loadu_si512((const void *)(ra + 8 * x));
            __m512i vb = _mm512_loadu_si512((const void *)(rb + 8 * x));
            sa = _mm512_add_epi64(sa, _mm512_popcnt_epi64(va));
            sb = _mm512_add_epi64(sb, _mm512_popcnt_epi64(vb));
            sc = _mm512_add_epi64(sc, _mm512_popcnt_epi64(_mm512_and_si512(va, vb)));
        }
        out[k] = dice_of((uint32_t)_mm512_reduce_add_epi64(sa),
                         (uint32_t)_mm512_reduce_add_epi64(sb),
                         (uint32_t)_mm512_reduce_add_epi64(sc));
    }
}
#endif

static PyObject *py_dice_each(PyObject *self, PyObject *args) {
    Py_buffer va, vb, vi, vj, vo;
    Py_ssize_t words;
    const char *path = "auto";
    if (!PyArg_ParseTuple(args, "y*y*ny*y*w*|s", &va, &vb, &words, &vi, &vj, &vo, &path))
        return NULL;
    PyObject *ret = NULL;
    size_t w = (size_t)words, na = 0, nb = 0, n = (size_t)vi.len / 4;
    if (words <= 0) {
        PyErr_SetString(PyExc_ValueError, "words must be positive");
        goto done;
    }
    if (check_clks(&va, w, "a", &na) || check_clks(&vb, w, "b", &nb)) goto done;
    if (vi.len != vj.len || vi.len % 4 || (size_t)vo.len != n * 8) {
        PyErr_SetString(PyExc_ValueError,
                        "ia and ib must be uint32 arrays of one length, out float64 of it");
        goto done;
    }
    if ((uintptr_t)va.buf % 8 || (uintptr_t)vb.buf % 8 || (uintptr_t)vo.buf % 8 ||
        (uintptr_t)vi.buf % 4 || (uintptr_t)vj.buf % 4) {
        PyErr_SetString(PyExc_ValueError, "a, b and out must be 8-byte aligned");
        goto done;
    }
    if (strcmp(path, "auto") == 0) path = best_path();
    int which = strcmp(path, "avx512") == 0 ? 2 : strcmp(path, "popcnt") == 0 ? 1
              : strcmp(path, "generic") == 0 ? 0 : -1;
    if (which < 0 || (which == 2 && !have_avx512()) || (which == 1 && !have_popcnt())) {
        PyErr_Format(PyExc_ValueError, "path %s is not available on this CPU", path);
        goto done;
    }
    if (which == 2 && w % 8) which = 1; /* rows of part vectors: the scalar path */
    const uint32_t *ia = vi.buf, *ib = vj.buf;
    for (size_t k = 0; k < n; k++)
        if (ia[k] >= na || ib[k] >= nb) {
            PyErr_Format(PyExc_IndexError, "pair %zu is out of range", k);
            goto done;
        }
    Py_BEGIN_ALLOW_THREADS
#if BM_X86
    if (which == 2) each_avx512(va.buf, vb.buf, w, ia, ib, n, vo.buf);
    else if (which == 1) each_popcnt(va.buf, vb.buf, w, ia, ib, n, vo.buf);
    else each_generic(va.buf, vb.buf, w, ia, ib, n, vo.buf);
#else
    each_generic(va.buf, vb.buf, w, ia, ib, n, vo.buf);
#endif
    Py_END_ALLOW_THREADS
    ret = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&va);
    PyBuffer_Release(&vb);
    PyBuffer_Release(&vi);
    PyBuffer_Release(&vj);
    PyBuffer_Release(&vo);
    return ret;
}

/* Batch LSH blocking (blocking.py): lsh_pairs, in a file of its own. */
#include "_lshbatch.c"
#include "_pairperm.c"
#include "_standing.c"
#include "_greedy.c"
#include "_radix.c"

/* ---- one query against a standing index ----------------------------------------
 *
 * scan(clks, words, popcounts, query, threshold) -> (sims, rows)
 *     every row of `clks` whose Dice with `query` passes anonlink's test (the query
 *     as anonlink's `a`); `popcounts` (int32) holds each row's popcount.
 * lsh_build(clks, words, positions, bits_per_band, offsets, rows)
 *     bit-sampling tables: for band b, the rows whose sampled bits spell key k are
 *     rows[b][offsets[b][k] : offsets[b][k+1]] (a counting sort; `offsets` and
 *     `rows` are writable uint32 buffers of bands*(2^r+1) and bands*n).
 * sketch(clks, words, sketch_positions, out)
 *     each row's sketch into the writable uint64 buffer `out` (n * ceil(s/64) words).
 *
 * Bit p of a CLK is bit p % 64 of its 64-bit word p / 64 (the words as stored). */

static inline int scan_row(const uint64_t *q, const uint64_t *row, size_t w, uint32_t pa,
                           uint32_t pb, uint32_t delta, double t, double *s) {
    uint32_t c = 0;
    for (size_t k = 0; k < w; k++) c += (uint32_t)__builtin_popcountll(q[k] & row[k]);
    return passes(c, pa, pb, delta, t, s);
}

#define SCAN_PATH(name, attrs)                                                          \
    attrs static void name(const uint64_t *x, size_t n, size_t w, const int32_t *pc,    \
                           const uint64_t *q, uint32_t pa, double t, uint32_t bits,     \
                           out_t *o) {                                                  \
        uint32_t delta = max_delta(pa, t, bits);                                        \
        for (size_t y = 0; y < n; y++) {                                                \
            double s;                                                                   \
            uint32_t pb = (uint32_t)pc[y];                                              \
            uint32_t d = pa > pb ? pa - pb : pb - pa;                                   \
            if (d > delta) continue;                                                    \
            if (scan_row(q, x + y * w, w, pa, pb, delta, t, &s)) out_push(o, s, (uint32_t)y, 0); \
        }                                                                               \
    }

SCAN_PATH(scan_generic, )
#if BM_X86
SCAN_PATH(scan_popcnt, __attribute__((target("popcnt"))))

/* w a multiple of 8: rows of whole 512-bit vectors. */
__attribute__((target("avx512f,avx512dq,avx512vpopcntdq")))
static void scan_avx512(const uint64_t *x, size_t n, size_t w, const int32_t *pc,
                        const uint64_t *q, uint32_t pa, double t, uint32_t bits, out_t *o) {
    uint32_t delta = max_delta(pa, t, bits);
    double h = t * (1.0 - 1e-9) / 2.0;
    size_t v = w / 8;
    for (size_t y = 0; y < n; y++) {
        const uint64_t *row = x + y * w;
        __m512i acc = _mm512_setzero_si512();
        for (size_t k = 0; k < v; k++)
            acc = _mm512_add_epi64(acc, _mm512_popcnt_epi64(_mm512_and_si512(
                _mm512_loadu_si512((const void *)(q + 8 * k)),
                _mm512_loadu_si512((const void *)(row + 8 * k)))));
        uint32_t c = (uint32_t)_mm512_reduce_add_epi64(acc);
        uint32_t pb = (uint32_t)pc[y];
        double s;
        if ((double)c >= h * (double)(pa + pb) && passes(c, pa, pb, delta, t, &s))
            out_push(o, s, (uint32_t)y, 0);
    }
}
#endif

static void scan_best(const uint64_t *x, size_t n, size_t w, const int32_t *pc,
                      const uint64_t *q, uint32_t pa, double t, uint32_t bits, out_t *o) {
#if BM_X86
    static int best = -1;
    if (best < 0) best = have_avx512() ? 2 : have_popcnt() ? 1 : 0;
    if (best == 2 && w % 8 == 0) scan_avx512(x, n, w, pc, q, pa, t, bits, o);
    else if (best >= 1) scan_popcnt(x, n, w, pc, q, pa, t, bits, o);
    else scan_generic(x, n, w, pc, q, pa, t, bits, o);
#else
    scan_generic(x, n, w, pc, q, pa, t, bits, o);
#endif
}

static PyObject *py_scan(PyObject *self, PyObject *args) {
    Py_buffer vx, vp, vq;
    Py_ssize_t words;
    double t;
    if (!PyArg_ParseTuple(args, "y*ny*y*d", &vx, &words, &vp, &vq, &t)) return NULL;
    PyObject *ret = NULL;
    size_t w = (size_t)words, n = 0;
    out_t o = {0};
    if (words <= 0) {
        PyErr_SetString(PyExc_ValueError, "words must be positive");
        goto done;
    }
    if (check_clks(&vx, w, "clks", &n)) goto done;
    if ((size_t)vp.len != n * 4 || (size_t)vq.len != w * 8) {
        PyErr_SetString(PyExc_ValueError, "popcounts must be int32, one per row; query one CLK");
        goto done;
    }
    if ((uintptr_t)vx.buf % 8 || (uintptr_t)vq.buf % 8 || (uintptr_t)vp.buf % 4) {
        PyErr_SetString(PyExc_ValueError, "clks and query must be 8-byte aligned");
        goto done;
    }
    const uint64_t *q = vq.buf;
    uint32_t pa = popcount_row(q, w);
    Py_BEGIN_ALLOW_THREADS
    if (pa > 0 && t > 0) scan_best(vx.buf, n, w, vp.buf, q, pa, t, (uint32_t)(w * 64), &o);
    Py_END_ALLOW_THREADS
    ret = results(&o, 0);
done:
    PyBuffer_Release(&vx);
    PyBuffer_Release(&vp);
    PyBuffer_Release(&vq);
    return ret;
}

static inline uint32_t band_key(const uint64_t *row, const int32_t *pos, int r) {
    uint32_t key = 0;
    for (int j = 0; j < r; j++) {
        uint32_t p = (uint32_t)pos[j];
        key |= (uint32_t)((row[p >> 6] >> (p & 63)) & 1u) << j;
    }
    return key;
}

static int check_plan(Py_buffer *vpos, size_t w, long r, size_t *bands) {
    if (r < 1 || r > 24 || vpos->len % (Py_ssize_t)(4 * r)) {
        PyErr_SetString(PyExc_ValueError, "bits_per_band must be 1-24; positions int32 bands*r");
        return -1;
    }
    *bands = (size_t)vpos->len / (4 * (size_t)r);
    const int32_t *pos = vpos->buf;
    for (size_t k = 0; k < *bands * (size_t)r; k++)
        if (pos[k] < 0 || (size_t)pos[k] >= w * 64) {
            PyErr_SetString(PyExc_ValueError, "a sampled bit position is outside the CLK");
            return -1;
        }
    return 0;
}

static PyObject *py_lsh_build(PyObject *self, PyObject *args) {
    Py_buffer vx, vpos, voff, vrows;
    Py_ssize_t words;
    long r;
    if (!PyArg_ParseTuple(args, "y*ny*lw*w*", &vx, &words, &vpos, &r, &voff, &vrows))
        return NULL;
    PyObject *ret = NULL;
    size_t w = (size_t)words, n = 0, bands = 0;
    int failed = 0;
    if (words <= 0) {
        PyErr_SetString(PyExc_ValueError, "words must be positive");
        goto done;
    }
    if (check_clks(&vx, w, "clks", &n) || check_plan(&vpos, w, r, &bands)) goto done;
    size_t keys = (size_t)1 << r;
    if ((size_t)voff.len != bands * (keys + 1) * 4 || (size_t)vrows.len != bands * n * 4) {
        PyErr_SetString(PyExc_ValueError, "offsets or rows have the wrong size");
        goto done;
    }
    if ((uintptr_t)vx.buf % 8 || (uintptr_t)voff.buf % 4 || (uintptr_t)vrows.buf % 4) {
        PyErr_SetString(PyExc_ValueError, "buffers must be aligned");
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    uint32_t *key = malloc((n + 1) * sizeof(uint32_t));
    if (!key) failed = 1;
    for (size_t b = 0; b < bands && !failed; b++) {
        const int32_t *pos = (const int32_t *)vpos.buf + b * (size_t)r;
        uint32_t *off = (uint32_t *)voff.buf + b * (keys + 1);
        uint32_t *rows = (uint32_t *)vrows.buf + b * n;
        const uint64_t *x = vx.buf;
        memset(off, 0, (keys + 1) * sizeof(uint32_t));
        for (size_t y = 0; y < n; y++) {
            key[y] = band_key(x + y * w, pos, (int)r);
            off[key[y] + 1]++;
        }
        for (size_t k = 0; k < keys; k++) off[k + 1] += off[k];
        /* Scatter with a moving cursor per key, then shift the cursors back. */
        for (size_t y = 0; y < n; y++) rows[off[key[y]]++] = (uint32_t)y;
        for (size_t k = keys; k > 0; k--) off[k] = off[k - 1];
        off[0] = 0;
    }
    free(key);
    Py_END_ALLOW_THREADS
    if (failed) {
        PyErr_NoMemory();
        goto done;
    }
    ret = Py_BuildValue("n", (Py_ssize_t)bands);
done:
    PyBuffer_Release(&vx);
    PyBuffer_Release(&vpos);
    PyBuffer_Release(&voff);
    PyBuffer_Release(&vrows);
    return ret;
}

/* At most this many 64-bit words of sketch per row (sketch_bits <= 64 * SKETCH_WORDS). */
#define SKETCH_WORDS 4

typedef struct {
    const uint64_t *x;
    size_t w, n;
    const int32_t *pos;
    int r;
    size_t bands;
    const uint32_t *offsets, *rows;
    int radius;
    /* A row is a candidate once it is under this many of the probed keys (1-3): with 2 or
     * 3, rows met in a single band are not read at all (see lsh_collect). */
    int hits;
    const uint64_t *q;
    uint32_t pa;
    double t;
    /* The sketch screen: the row's bits at `sketch_bits` fixed positions; a row whose
     * sketch differs from the query's in more than `cut` places is not read at all. */
    const uint64_t *sk;
    size_t sw;
    uint32_t cut;
    uint64_t qs[SKETCH_WORDS];
} lsh_args_t;

/* Per thread, kept for the thread's life so a query allocates nothing once warm: a bitmap
 * of the rows already collected (all clear between calls), the rows collected, and each
 * probe's table entry and row range. */
static __thread uint64_t *tl_seen, *tl_twice;
static __thread size_t tl_seen_words;
static __thread uint32_t *tl_cand;
static __thread size_t tl_cand_cap;
static __thread size_t *tl_probe;
static __thread uint32_t *tl_lo, *tl_hi;
static __thread size_t tl_probe_cap;

static int grow_u32(uint32_t **v, size_t *cap, size_t want) {
    if (want <= *cap) return 0;
    size_t c = *cap ? *cap : 4096;
    while (c < want) c *= 2;
    uint32_t *grown = realloc(*v, c * sizeof(uint32_t));
    if (!grown) return -1;
    *v = grown;
    *cap = c;
    return 0;
}

static int lsh_scratch(size_t n, size_t probes) {
    size_t words = n / 64 + 1;
    if (words > tl_seen_words) {
        free(tl_seen);
        free(tl_twice);
        tl_seen = calloc(words, sizeof(uint64_t));
        tl_twice = calloc(words, sizeof(uint64_t));
        tl_seen_words = tl_seen && tl_twice ? words : 0;
        if (!tl_seen_words) {
            free(tl_seen);
            free(tl_twice);
            tl_seen = tl_twice = NULL;
            return -1;
        }
    }
    if (grow_u32(&tl_cand, &tl_cand_cap, 4096)) return -1;
    if (probes > tl_probe_cap) {
        free(tl_probe);
        free(tl_lo);
        free(tl_hi);
        tl_probe = malloc(probes * sizeof(size_t));
        tl_lo = malloc(probes * sizeof(uint32_t));
        tl_hi = malloc(probes * sizeof(uint32_t));
        tl_probe_cap = probes;
        if (!tl_probe || !tl_lo || !tl_hi) {
            free(tl_probe);
            free(tl_lo);
            free(tl_hi);
            tl_probe = NULL;
            tl_lo = tl_hi = NULL;
            tl_probe_cap = 0;
            return -1;
        }
    }
    return 0;
}

/* The keys probed in one band: k0, then k0 with one bit flipped, then with two. */
static size_t probe_keys(uint32_t k0, int r, int radius, size_t base, size_t *keys) {
    size_t m = 0;
    keys[m++] = base + k0;
    if (radius >= 1)
        for (int i = 0; i < r; i++) keys[m++] = base + (k0 ^ (1u << i));
    if (radius >= 2)
        for (int i = 0; i < r; i++)
            for (int j = i + 1; j < r; j++) keys[m++] = base + (k0 ^ (1u << i) ^ (1u << j));
    return m;
}

static size_t probes_per_band(int r, int radius) {
    return 1 + (radius >= 1 ? (size_t)r : 0) + (radius >= 2 ? (size_t)r * (r - 1) / 2 : 0);
}

/* Phase 1: the rows under the probed keys, into tl_cand: each distinct row once, or with
 * collision counting (hits 2 or 3) each row under at least `hits` of the keys, once.
 * Returns the count, or (size_t)-1 when out of memory; *looked counts the row-list
 * entries read (rows with repeats). The tables are far bigger than the caches and nearly
 * every probe misses them, so the probes are walked as a pipeline: a probe's offsets are
 * prefetched OFFSETS_AHEAD probes before its list is walked, read and its row list's
 * first ROWS_AHEAD lines prefetched LIST_AHEAD probes before. (Until 2026-12-03 every
 * probe's offsets, then every probe's lists, were prefetched up front: with thousands of
 * probes most of those lines were gone from the caches again when the walk reached them,
 * and perf put a third of a counting look-up on the load of a row id.) */
#define ROWS_AHEAD 4
#define LIST_AHEAD 8
#define OFFSETS_AHEAD 16
/* Prefetches of the tables and sketches ask for the line in the second-level cache
 * (prefetcht1), not the first: with the T0 hint the sketch screen's look-ahead stalled
 * once the first level's miss buffers filled, and the T1 hint made the look-up at
 * 1,000,000 rows 1.2x faster (docs/performance.md). */
#define HINT_L2 2
static size_t lsh_collect(const lsh_args_t *a, size_t *looked) {
    size_t keys = (size_t)1 << a->r, per = probes_per_band(a->r, a->radius), np = 0, m = 0;
    uint64_t *seen = tl_seen, *twice = tl_twice;
    size_t *probe = tl_probe;
    uint32_t *lo = tl_lo, *hi = tl_hi;
    for (size_t b = 0; b < a->bands; b++) {
        uint32_t k0 = band_key(a->q, a->pos + b * (size_t)a->r, a->r);
        np += probe_keys(k0, a->r, a->radius, b * (keys + 1), probe + np);
    }
    const uint32_t *offsets = a->offsets;
    size_t po = 0, pl = 0, want = 0;
    uint32_t target = (uint32_t)a->hits - 1;
    for (size_t p = 0; p < np; p++) {
        for (; po < np && po < p + OFFSETS_AHEAD; po++)
            __builtin_prefetch(offsets + probe[po], 0, HINT_L2);
        for (; pl < np && pl < p + LIST_AHEAD; pl++) {
            lo[pl] = offsets[probe[pl]];
            hi[pl] = offsets[probe[pl] + 1];
            const uint32_t *list = a->rows + (pl / per) * a->n;
            const char *at = (const char *)(list + lo[pl]), *end = (const char *)(list + hi[pl]);
            for (int l = 0; l < ROWS_AHEAD && at < end; l++, at += 64)
                __builtin_prefetch(at, 0, HINT_L2);
        }
        const uint32_t *rows = a->rows + (p / per) * a->n;
        uint32_t e0 = lo[p], e1 = hi[p];
        if (a->hits > 1) {
            /* Gathered first, counted after (below): a copy's loads do not wait on one
             * another, so the misses of many lists overlap, where counting as it reads
             * held each entry's work behind its list's miss. */
            if (want + (e1 - e0) > tl_cand_cap && grow_u32(&tl_cand, &tl_cand_cap, want + (e1 - e0)))
                return (size_t)-1;
            memcpy(tl_cand + want, rows + e0, (size_t)(e1 - e0) * sizeof(uint32_t));
            want += e1 - e0;
            continue;
        }
        want += e1 - e0;
        if (m + (e1 - e0) > tl_cand_cap && grow_u32(&tl_cand, &tl_cand_cap, m + (e1 - e0)))
            return (size_t)-1;
        uint32_t *cand = tl_cand;
        for (uint32_t e = e0; e < e1; e++) {
            uint32_t y = rows[e];
            uint64_t bit = 1ull << (y & 63);
            if (seen[y >> 6] & bit) continue;
            seen[y >> 6] |= bit;
            cand[m++] = y;
        }
    }
    /* Collision counting over the gathered entries, in place (a candidate is written at or
     * before the entry being read): a row met before (seen) and not yet twice becomes a
     * candidate. The two bit planes (n/8 bytes each) stay in the second-level cache,
     * where a byte a row would not. */
    uint32_t *cand = tl_cand;
    if (a->hits == 2) {
        /* One plane toggled: a row is written out each second time it is met (once for
         * two or three meetings, twice for four or five), then the few written out are
         * made distinct with the second plane, cleared again row by row. */
        for (size_t e = 0; e < want; e++) {
            uint32_t y = cand[e];
            size_t at = y >> 6;
            uint64_t bit = 1ull << (y & 63), l = seen[at];
            cand[m] = y;
            m += (l & bit) != 0;
            seen[at] = l ^ bit;
        }
        size_t kept = 0;
        for (size_t c = 0; c < m; c++) {
            uint32_t y = cand[c];
            uint64_t bit = 1ull << (y & 63), h = twice[y >> 6];
            cand[kept] = y;
            kept += (h & bit) == 0;
            twice[y >> 6] = h | bit;
        }
        for (size_t c = 0; c < kept; c++) twice[cand[c] >> 6] = 0;
        m = kept;
    } else if (a->hits == 3) {
        /* The count in the two planes (seen: bit 0, twice: bit 1), saturating at 3. */
        for (size_t e = 0; e < want; e++) {
            uint32_t y = cand[e];
            size_t at = y >> 6;
            uint32_t s = y & 63;
            uint64_t l = seen[at], h = twice[at];
            uint32_t c = (uint32_t)((l >> s) & 1) | (uint32_t)(((h >> s) & 1) << 1);
            uint32_t c2 = c + (c < 3);
            seen[at] = (l & ~(1ull << s)) | ((uint64_t)(c2 & 1) << s);
            twice[at] = (h & ~(1ull << s)) | ((uint64_t)(c2 >> 1) << s);
            cand[m] = y;
            m += c == target;
        }
    }
    *looked += want;
    if (a->hits > 1) {
        /* Clear the planes for the next call: every row met, not just the candidates. */
        size_t words = a->n / 64 + 1;
        memset(seen, 0, words * sizeof(uint64_t));
        if (a->hits > 2) memset(twice, 0, words * sizeof(uint64_t));
    }
    return m;
}

/* How far ahead of the screen a candidate's sketch is prefetched: all of them at once
 * (tens of thousands of lines on real encodings) would push the first out of the caches
 * before they are read. */
#define SKETCH_AHEAD 64

/* Phase 2: screen each collected row by its sketch (prefetched in phase 1), decide the
 * rows that pass exactly (prefetched: they are scattered over the index), and clear the
 * bitmap for the next call. *read counts the rows decided. */
#define LSH_DECIDE(name, attrs)                                                           \
    attrs static void name(const lsh_args_t *a, size_t m, out_t *o, size_t *read) {      \
        size_t w = a->w, sw = a->sw, kept = 0;                                            \
        uint32_t bits = (uint32_t)(w * 64), pa = a->pa, delta = max_delta(pa, a->t, bits); \
        uint32_t *cand = tl_cand, cut = a->cut;                                           \
        uint64_t *seen = tl_seen, qs[SKETCH_WORDS];                                       \
        const uint64_t *sk = a->sk;                                                       \
        for (size_t k = 0; k < sw; k++) qs[k] = a->qs[k];                                 \
        for (size_t c = 0; c < m; c++) seen[cand[c] >> 6] = 0;                            \
        if (sk) {                                                                         \
            /* Branch-free: whether a row passes is a coin the predictor cannot call. */  \
            for (size_t c = 0; c < m; c++) {                                              \
                if (c + SKETCH_AHEAD < m)                                                 \
                    __builtin_prefetch(sk + (size_t)cand[c + SKETCH_AHEAD] * sw, 0, HINT_L2);  \
                uint32_t y = cand[c], differ = 0;                                         \
                const uint64_t *ks = sk + (size_t)y * sw;                                 \
                for (size_t k = 0; k < sw; k++)                                           \
                    differ += (uint32_t)__builtin_popcountll(ks[k] ^ qs[k]);              \
                cand[kept] = y;                                                           \
                kept += differ <= cut;                                                    \
            }                                                                             \
        } else {                                                                          \
            kept = m;                                                                     \
        }                                                                                 \
        for (size_t c = 0; c < kept; c++) {                                               \
            __builtin_prefetch(a->x + (size_t)cand[c] * w);                               \
            __builtin_prefetch(a->x + (size_t)cand[c] * w + w - 1);                       \
        }                                                                                 \
        *read = kept;                                                                     \
        for (size_t c = 0; c < kept; c++) {                                               \
            const uint64_t *row = a->x + (size_t)tl_cand[c] * w;                          \
            uint32_t pb = 0, both = 0;                                                    \
            double s;                                                                     \
            for (size_t k = 0; k < w; k++) {                                              \
                pb += (uint32_t)__builtin_popcountll(row[k]);                             \
                both += (uint32_t)__builtin_popcountll(a->q[k] & row[k]);                 \
            }                                                                             \
            if (passes(both, pa, pb, delta, a->t, &s)) out_push(o, s, tl_cand[c], 0);     \
        }                                                                                 \
    }

LSH_DECIDE(lsh_decide_generic, )
#if BM_X86
LSH_DECIDE(lsh_decide_popcnt, __attribute__((target("popcnt"))))
#endif

/* Bits `pos[0..s)` of one CLK, packed into sw words (bit j into word j / 64). */
static void sketch_row(const uint64_t *row, const int32_t *pos, size_t s, size_t sw,
                       uint64_t *out) {
    for (size_t k = 0; k < sw; k++) out[k] = 0;
    for (size_t j = 0; j < s; j++) {
        uint32_t p = (uint32_t)pos[j];
        out[j >> 6] |= ((row[p >> 6] >> (p & 63)) & 1ull) << (j & 63);
    }
}

static int check_sketch_positions(Py_buffer *vsp, size_t w, size_t *s, size_t *sw) {
    if (vsp->len % 4 || (size_t)vsp->len / 4 > 64 * SKETCH_WORDS) {
        PyErr_SetString(PyExc_ValueError, "sketch positions: int32, at most 256 of them");
        return -1;
    }
    *s = (size_t)vsp->len / 4;
    *sw = (*s + 63) / 64;
    const int32_t *sp = vsp->buf;
    for (size_t k = 0; k < *s; k++)
        if (sp[k] < 0 || (size_t)sp[k] >= w * 64) {
            PyErr_SetString(PyExc_ValueError, "a sketch bit position is outside the CLK");
            return -1;
        }
    return 0;
}

static PyObject *py_sketch(PyObject *self, PyObject *args) {
    Py_buffer vx, vsp, vout;
    Py_ssize_t words;
    if (!PyArg_ParseTuple(args, "y*ny*w*", &vx, &words, &vsp, &vout)) return NULL;
    PyObject *ret = NULL;
    size_t w = (size_t)words, n = 0, s = 0, sw = 0;
    if (words <= 0) {
        PyErr_SetString(PyExc_ValueError, "words must be positive");
        goto done;
    }
    if (check_clks(&vx, w, "clks", &n) || check_sketch_positions(&vsp, w, &s, &sw)) goto done;
    if ((size_t)vout.len != n * sw * 8 || (uintptr_t)vout.buf % 8 || (uintptr_t)vx.buf % 8) {
        PyErr_SetString(PyExc_ValueError, "out: n * ceil(s / 64) aligned uint64 words");
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    for (size_t y = 0; y < n; y++)
        sketch_row((const uint64_t *)vx.buf + y * w, vsp.buf, s, sw, (uint64_t *)vout.buf + y * sw);
    Py_END_ALLOW_THREADS
    ret = Py_BuildValue("n", (Py_ssize_t)n);
done:
    PyBuffer_Release(&vx);
    PyBuffer_Release(&vsp);
    PyBuffer_Release(&vout);
    return ret;
}

/* ---- a prepared index: the buffers held once, so a query passes only itself ---------
 *
 * lsh_prepare(clks, words, positions, bits_per_band, offsets, rows, radius,
 *             sketch_positions, sketches, cuts[, hits]) -> capsule
 *     checks the buffers once and holds them (read-only from then on) for the capsule's
 *     life. `cuts` (int32, one per popcount 0..bits) is the sketch cut for a query of each
 *     popcount, chosen by matcher/lshindex.py for the tables' threshold (a valid, looser
 *     cut for any higher threshold). `hits` (1-3, default 1): a row is looked at only when
 *     it is under at least that many of a query's probed keys (in that many bands).
 * lsh_query(capsule, query, threshold, cut) -> (sims, rows, looked, read)
 *     the rows sharing a band key with `query` (one CLK's bytes), or one within `radius`
 *     (0-2) flipped bits of it (multi-probe), decided exactly as `scan` decides; each row
 *     once. `looked` counts the rows looked at (with repeats). A row whose sketch (its
 *     bits at `sketch_positions`, as `sketch` packs them) differs from the query's in more
 *     than the cut is screened out unread: `cut` when it is not negative, else the
 *     prepared cut for the query's popcount. `read` counts the rows read and decided.
 * lsh_query_many(capsules, query, threshold, cuts) -> [(sims, rows, looked, read), ...]
 *     lsh_query on each capsule (a tuple) with its cut (a tuple of ints), releasing the
 *     GIL once for all of them: a query searches every partner's index in one call (on
 *     the look-up pool, when one runs: see lsh_pool). */

#define MAX_QUERY_WORDS 64

typedef struct {
    Py_buffer x, pos, off, rows, sp, sk, cuts, pc;
    size_t w, n, bands, s, sw;
    long r, radius, hits;
    int scan; /* scan_prepare's: no tables, every row in the popcount range is decided */
} prepared_t;

static void prepared_release(prepared_t *p) {
    if (p->scan) {
        PyBuffer_Release(&p->x);
        PyBuffer_Release(&p->pc);
        PyMem_Free(p);
        return;
    }
    PyBuffer_Release(&p->x);
    PyBuffer_Release(&p->pos);
    PyBuffer_Release(&p->off);
    PyBuffer_Release(&p->rows);
    PyBuffer_Release(&p->sp);
    PyBuffer_Release(&p->sk);
    PyBuffer_Release(&p->cuts);
    PyMem_Free(p);
}

static void prepared_free(PyObject *capsule) {
    prepared_t *p = PyCapsule_GetPointer(capsule, "blindmatch.lsh");
    if (p) prepared_release(p);
}

static PyObject *py_lsh_prepare(PyObject *self, PyObject *args) {
    prepared_t *p = PyMem_Calloc(1, sizeof(prepared_t));
    if (!p) return PyErr_NoMemory();
    Py_ssize_t words;
    p->hits = 1;
    if (!PyArg_ParseTuple(args, "y*ny*ly*y*ly*y*y*|l", &p->x, &words, &p->pos, &p->r, &p->off,
                          &p->rows, &p->radius, &p->sp, &p->sk, &p->cuts, &p->hits)) {
        PyMem_Free(p);
        return NULL;
    }
    PyObject *capsule = PyCapsule_New(p, "blindmatch.lsh", prepared_free);
    if (!capsule) {
        prepared_release(p);
        return NULL;
    }
    /* From here on the capsule owns the buffers: an error just drops it. */
    p->w = (size_t)words;
    if (words <= 0 || words > MAX_QUERY_WORDS || p->radius < 0 || p->radius > 2 || p->hits < 1 ||
        p->hits > 3) {
        PyErr_SetString(PyExc_ValueError, "words must be 1-64, radius 0, 1 or 2 and hits 1-3");
        goto fail;
    }
    if (check_clks(&p->x, p->w, "clks", &p->n) || check_plan(&p->pos, p->w, p->r, &p->bands) ||
        check_sketch_positions(&p->sp, p->w, &p->s, &p->sw))
        goto fail;
    size_t keys = (size_t)1 << p->r;
    if ((size_t)p->off.len != p->bands * (keys + 1) * 4 || (size_t)p->rows.len != p->bands * p->n * 4) {
        PyErr_SetString(PyExc_ValueError, "offsets or rows: wrong size");
        goto fail;
    }
    if ((size_t)p->sk.len != p->n * p->sw * 8 || (size_t)p->cuts.len != (p->w * 64 + 1) * 4) {
        PyErr_SetString(PyExc_ValueError, "sketches or cuts: wrong size");
        goto fail;
    }
    if ((uintptr_t)p->x.buf % 8 || (uintptr_t)p->off.buf % 4 || (uintptr_t)p->rows.buf % 4 ||
        (uintptr_t)p->sk.buf % 8 || (uintptr_t)p->cuts.buf % 4) {
        PyErr_SetString(PyExc_ValueError, "buffers must be aligned");
        goto fail;
    }
    return capsule;
fail:
    Py_DECREF(capsule);
    return NULL;
}

/* First index in the ascending int32 popcounts `v[0..n)` with v >= x. */
static size_t lower_bound_i32(const int32_t *v, size_t n, int64_t x) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if ((int64_t)v[mid] < x) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

/* A scanned segment's answer for query q: every row whose popcount can reach the
 * threshold (segment.popcount_range's slice: the rows are sorted by popcount), decided
 * exactly as `scan` decides; rows numbered in the whole segment. */
static void scan_one(const prepared_t *p, const uint64_t *q, uint32_t pa, double t, out_t *o,
                     size_t *looked, size_t *read) {
    int64_t low = (int64_t)floor((double)pa * t / (2.0 - t)) - 1;
    int64_t high = (int64_t)ceil((double)pa * (2.0 - t) / t) + 1;
    const int32_t *pc = p->pc.buf;
    size_t start = lower_bound_i32(pc, p->n, low < 1 ? 1 : low);
    size_t stop = lower_bound_i32(pc, p->n, high + 1);
    if (stop <= start) return;
    size_t before = o->n;
    scan_best((const uint64_t *)p->x.buf + start * p->w, stop - start, p->w, pc + start, q, pa,
              t, (uint32_t)(p->w * 64), o);
    for (size_t k = before; k < o->n; k++) o->ia[k] += (uint32_t)start;
    *looked += stop - start;
    *read += stop - start;
}

/* scan_prepare(clks, words, popcounts) -> capsule
 *     a segment searched by a full scan (no LSH tables: a small index, a delta), held like
 *     lsh_prepare's so that lsh_query_many and lsh_query_batch take it beside the tabled
 *     ones and scan it in the same pass (on the look-up pool). `popcounts`: int32 per
 *     row, ascending (the rows sorted by popcount). Its cut is ignored. */
static PyObject *py_scan_prepare(PyObject *self, PyObject *args) {
    prepared_t *p = PyMem_Calloc(1, sizeof(prepared_t));
    if (!p) return PyErr_NoMemory();
    Py_ssize_t words;
    if (!PyArg_ParseTuple(args, "y*ny*", &p->x, &words, &p->pc)) {
        PyMem_Free(p);
        return NULL;
    }
    p->scan = 1;
    PyObject *capsule = PyCapsule_New(p, "blindmatch.lsh", prepared_free);
    if (!capsule) {
        prepared_release(p);
        return NULL;
    }
    p->w = (size_t)words;
    if (words <= 0 || words > MAX_QUERY_WORDS) {
        PyErr_SetString(PyExc_ValueError, "words must be 1-64");
        goto fail;
    }
    if (check_clks(&p->x, p->w, "clks", &p->n)) goto fail;
    if ((size_t)p->pc.len != p->n * 4) {
        PyErr_SetString(PyExc_ValueError, "popcounts: int32, one per row");
        goto fail;
    }
    if ((uintptr_t)p->x.buf % 8 || (uintptr_t)p->pc.buf % 4) {
        PyErr_SetString(PyExc_ValueError, "buffers must be aligned");
        goto fail;
    }
    const int32_t *pc = p->pc.buf;
    for (size_t y = 1; y < p->n; y++)
        if (pc[y] < pc[y - 1]) {
            PyErr_SetString(PyExc_ValueError, "popcounts: ascending (rows sorted by popcount)");
            goto fail;
        }
    return capsule;
fail:
    Py_DECREF(capsule);
    return NULL;
}

/* One prepared index's look-up for query q (p->w words, popcount pa); no Python calls,
 * so it runs with the GIL released. */
static void lsh_one(const prepared_t *p, const uint64_t *q, uint32_t pa, double t,
                    long cut_override, out_t *o, size_t *looked, size_t *read) {
    if (pa == 0 || t <= 0 || p->n == 0) return;
    if (p->scan) {
        scan_one(p, q, pa, t, o, looked, read);
        return;
    }
    lsh_args_t la = {p->x.buf, p->w, p->n, p->pos.buf, (int)p->r, p->bands, p->off.buf,
                     p->rows.buf, (int)p->radius, (int)p->hits, q, pa, t,
                     p->s ? p->sk.buf : NULL, p->sw, 0, {0}};
    if (p->s) {
        long cut = cut_override >= 0 ? cut_override : ((const int32_t *)p->cuts.buf)[pa];
        sketch_row(q, p->sp.buf, p->s, p->sw, la.qs);
        la.cut = cut < 0 ? 0 : cut > (long)p->s ? (uint32_t)p->s : (uint32_t)cut;
    }
    size_t m = lsh_scratch(p->n, p->bands * probes_per_band((int)p->r, (int)p->radius))
                   ? (size_t)-1
                   : lsh_collect(&la, looked);
    if (m == (size_t)-1) {
        o->failed = 1;
        return;
    }
#if BM_X86
    if (have_popcnt()) lsh_decide_popcnt(&la, m, o, read);
    else lsh_decide_generic(&la, m, o, read);
#else
    lsh_decide_generic(&la, m, o, read);
#endif
}

static PyObject *one_result(out_t *o, size_t looked, size_t read) {
    PyObject *ret = NULL, *found = results(o, 0);
    if (found) {
        ret = Py_BuildValue("(OOnn)", PyTuple_GET_ITEM(found, 0), PyTuple_GET_ITEM(found, 1),
                            (Py_ssize_t)looked, (Py_ssize_t)read);
        Py_DECREF(found);
    }
    return ret;
}

static PyObject *py_lsh_query(PyObject *self, PyObject *args) {
    PyObject *capsule;
    const char *qbytes;
    Py_ssize_t qlen;
    double t;
    long cut_override;
    if (!PyArg_ParseTuple(args, "Oy#dl", &capsule, &qbytes, &qlen, &t, &cut_override))
        return NULL;
    prepared_t *p = PyCapsule_GetPointer(capsule, "blindmatch.lsh");
    if (!p) return NULL;
    if ((size_t)qlen != p->w * 8) {
        PyErr_SetString(PyExc_ValueError, "query: one CLK of the index's length");
        return NULL;
    }
    uint64_t q[MAX_QUERY_WORDS];
    memcpy(q, qbytes, (size_t)qlen);
    uint32_t pa = popcount_row(q, p->w);
    size_t looked = 0, read = 0;
    out_t o = {0};
    Py_BEGIN_ALLOW_THREADS
    lsh_one(p, q, pa, t, cut_override, &o, &looked, &read);
    Py_END_ALLOW_THREADS
    return one_result(&o, looked, read);
}

/* ---- the look-up pool: threads of their own, on cores of their own -------------------
 *
 * lsh_pool(cpus, threads) -> running
 *     starts `threads` look-up threads allowed only on the CPUs listed (none listed: any),
 *     once per process: a later call starts nothing and returns how many run. From then
 *     on lsh_query_many hands its look-ups to the pool and sleeps until they are done,
 *     instead of running them on the calling thread. The matcher keeps its Python threads
 *     on one core (they hand the GIL to each other several times a call, which costs far
 *     less on one core than across several) and the look-ups, which need no GIL, on the
 *     others (matcher/placement.py). A forked child starts with no pool. */

typedef struct job {
    prepared_t **ps;
    const long *cuts;
    const uint64_t *q;
    uint32_t pa;
    double t;
    out_t *os;
    size_t *counts;
    Py_ssize_t k;
    int done;
    pthread_cond_t cv;
    struct job *next;
} job_t;

static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pool_cv = PTHREAD_COND_INITIALIZER;
static job_t *pool_head, *pool_tail;
static int pool_threads;

static void run_job(job_t *j) {
    for (Py_ssize_t i = 0; i < j->k; i++)
        lsh_one(j->ps[i], j->q, j->pa, j->t, j->cuts[i], &j->os[i], &j->counts[2 * i],
                &j->counts[2 * i + 1]);
}

/* Put the job at the queue's end, not done yet; called with pool_mu held. */
static void queue_locked(job_t *j) {
    pthread_cond_init(&j->cv, NULL);
    j->done = 0;
    j->next = NULL;
    if (pool_tail) pool_tail->next = j;
    else pool_head = j;
    pool_tail = j;
}

/* Take the queue's first job and run it outside the lock; called and returns with pool_mu held. */
static void run_head_locked(void) {
    job_t *j = pool_head;
    pool_head = j->next;
    if (!pool_head) pool_tail = NULL;
    pthread_mutex_unlock(&pool_mu);
    run_job(j);
    pthread_mutex_lock(&pool_mu);
    j->done = 1;
    pthread_cond_signal(&j->cv);
}

static void *pool_main(void *arg) {
    (void)arg;
    for (;;) {
        pthread_mutex_lock(&pool_mu);
        while (!pool_head) pthread_cond_wait(&pool_cv, &pool_mu);
        run_head_locked();
        pthread_mutex_unlock(&pool_mu);
    }
    return NULL;
}

/* Run the job on the pool, waiting for it, or here when there is none. No GIL needed. */
static void pool_run(job_t *j) {
    pthread_mutex_lock(&pool_mu);
    if (!pool_threads) {
        pthread_mutex_unlock(&pool_mu);
        run_job(j);
        return;
    }
    queue_locked(j);
    pthread_cond_signal(&pool_cv);
    while (!j->done) pthread_cond_wait(&j->cv, &pool_mu);
    pthread_mutex_unlock(&pool_mu);
    pthread_cond_destroy(&j->cv);
}

static void pool_after_fork(void) {
    /* The child has none of the pool's threads: look up inline, with fresh locks. */
    pthread_mutex_init(&pool_mu, NULL);
    pthread_cond_init(&pool_cv, NULL);
    pool_head = pool_tail = NULL;
    pool_threads = 0;
}

static PyObject *py_lsh_pool(PyObject *self, PyObject *args) {
    PyObject *cpus;
    int threads;
    if (!PyArg_ParseTuple(args, "O!i", &PyList_Type, &cpus, &threads)) return NULL;
    if (threads < 0 || threads > 256) {
        PyErr_SetString(PyExc_ValueError, "threads: 0 to 256");
        return NULL;
    }
#if BM_AFFINITY
    cpu_set_t set;
    CPU_ZERO(&set);
#endif
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(cpus); i++) {
        long c = PyLong_AsLong(PyList_GET_ITEM(cpus, i));
        if (c == -1 && PyErr_Occurred()) return NULL;
        if (c < 0 || c >= 1024) {
            PyErr_Format(PyExc_ValueError, "cpus: %ld is not a CPU number", c);
            return NULL;
        }
#if BM_AFFINITY
        CPU_SET((int)c, &set);
#endif
    }
    static int atfork_set;
    if (!atfork_set && pthread_atfork(NULL, NULL, pool_after_fork) == 0) atfork_set = 1;
    pthread_mutex_lock(&pool_mu);
    int running = pool_threads;
    pthread_mutex_unlock(&pool_mu);
    if (running || !threads) return PyLong_FromLong(running);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
#if BM_AFFINITY
    if (CPU_COUNT(&set) && pthread_attr_setaffinity_np(&attr, sizeof(set), &set)) {
        pthread_attr_destroy(&attr);
        PyErr_SetString(PyExc_OSError, "cpus: cannot run threads there");
        return NULL;
    }
#endif
    for (int i = 0; i < threads; i++) {
        pthread_t t;
        if (pthread_create(&t, &attr, pool_main, NULL)) break;
        pthread_mutex_lock(&pool_mu);
        pool_threads++;
        pthread_mutex_unlock(&pool_mu);
    }
    pthread_attr_destroy(&attr);
    pthread_mutex_lock(&pool_mu);
    running = pool_threads;
    pthread_mutex_unlock(&pool_mu);
    if (!running) {
        PyErr_SetString(PyExc_OSError, "could not start a look-up thread");
        return NULL;
    }
    return PyLong_FromLong(running);
}

/* At most this many prepared indexes in one lsh_query_many call. */
#define MAX_MANY 256

static PyObject *py_lsh_query_many(PyObject *self, PyObject *args) {
    PyObject *capsules, *cut_list;
    const char *qbytes;
    Py_ssize_t qlen;
    double t;
    if (!PyArg_ParseTuple(args, "O!y#dO!", &PyTuple_Type, &capsules, &qbytes, &qlen, &t,
                          &PyTuple_Type, &cut_list))
        return NULL;
    Py_ssize_t k = PyTuple_GET_SIZE(capsules);
    if (k > MAX_MANY || PyTuple_GET_SIZE(cut_list) != k) {
        PyErr_SetString(PyExc_ValueError, "capsules and cuts: tuples of one length, at most 256");
        return NULL;
    }
    prepared_t *ps[MAX_MANY];
    long cuts[MAX_MANY];
    for (Py_ssize_t i = 0; i < k; i++) {
        ps[i] = PyCapsule_GetPointer(PyTuple_GET_ITEM(capsules, i), "blindmatch.lsh");
        if (!ps[i]) return NULL;
        cuts[i] = PyLong_AsLong(PyTuple_GET_ITEM(cut_list, i));
        if (cuts[i] == -1 && PyErr_Occurred()) return NULL;
        if ((size_t)qlen != ps[i]->w * 8) {
            PyErr_SetString(PyExc_ValueError, "query: one CLK of the indexes' length");
            return NULL;
        }
    }
    out_t *os = PyMem_Calloc((size_t)k + 1, sizeof(out_t));
    size_t *counts = PyMem_Calloc(2 * (size_t)k + 1, sizeof(size_t));
    if (!os || !counts) {
        PyMem_Free(os);
        PyMem_Free(counts);
        return PyErr_NoMemory();
    }
    uint64_t q[MAX_QUERY_WORDS];
    memcpy(q, qbytes, (size_t)qlen);
    uint32_t pa = k ? popcount_row(q, ps[0]->w) : 0;
    job_t job = {ps, cuts, q, pa, t, os, counts, k, 0, PTHREAD_COND_INITIALIZER, NULL};
    Py_BEGIN_ALLOW_THREADS
    pool_run(&job);
    Py_END_ALLOW_THREADS
    PyObject *list = PyList_New(k);
    for (Py_ssize_t i = 0; i < k; i++) {
        if (!list) {  /* an earlier step failed: only free what is left */
            out_free(&os[i]);
            continue;
        }
        PyObject *one = one_result(&os[i], counts[2 * i], counts[2 * i + 1]);  /* frees os[i] */
        if (!one) {
            Py_CLEAR(list);
            continue;
        }
        PyList_SET_ITEM(list, i, one);
    }
    PyMem_Free(os);
    PyMem_Free(counts);
    return list;
}

/* ---- a batch of queries in one call --------------------------------------------------
 *
 * lsh_query_batch(items) -> [[(sims, rows, looked, read), ...], ...]
 *     items: a list of (capsules, queries, threshold, cuts): lsh_query_many's arguments,
 *     except that `queries` holds one or more whole CLKs (their bytes, back to back). The
 *     answer has one list per CLK, item by item, each as lsh_query_many's. The GIL is
 *     released once for the whole batch, and the look-ups are handed to the pool (when
 *     one runs) together, under one lock, and waited for together: the queries that
 *     arrive at once (matcher/realtime/lookups.py gathers them) cost one hand-over in all,
 *     not one each. */

#define MAX_BATCH 4096

static void batch_free(job_t *jobs, size_t nj, uint64_t *qs) {
    for (size_t i = 0; i < nj; i++) {
        for (Py_ssize_t k = 0; k < jobs[i].k; k++) out_free(&jobs[i].os[k]);
        PyMem_Free(jobs[i].os);
        PyMem_Free(jobs[i].counts);
        PyMem_Free((void *)jobs[i].cuts);
        PyMem_Free(jobs[i].ps);
    }
    PyMem_Free(jobs);
    PyMem_Free(qs);
}

/* All of `jobs` on the pool (enqueued at once), waiting for them all; or here.
 *
 * The calling thread does not only wait: it runs jobs from the queue too, while there are
 * any (its own, mostly; whichever thread runs a job wakes its owner). On real encodings a
 * look-up takes several times the CPU of the request's Python, so with the look-ups on
 * the pool alone the request core sat idle while the pool's core was the bottleneck; the
 * caller (its GIL released) now lends its core. A pass of one CLK runs here at once, with
 * no hand-over to a pool thread and back (docs/performance.md, *Serving overhead*). */
static void pool_run_all(job_t *jobs, size_t nj) {
    pthread_mutex_lock(&pool_mu);
    if (!pool_threads || nj == 1) {
        pthread_mutex_unlock(&pool_mu);
        for (size_t i = 0; i < nj; i++) run_job(&jobs[i]);
        return;
    }
    for (size_t i = 0; i < nj; i++) queue_locked(&jobs[i]);
    if (nj > 1) pthread_cond_broadcast(&pool_cv);
    else pthread_cond_signal(&pool_cv);
    while (pool_head) run_head_locked(); /* help: run queued jobs here until none is left */
    /* The last is most likely done last: usually one wake-up for the lot. */
    for (size_t i = nj; i-- > 0;)
        while (!jobs[i].done) pthread_cond_wait(&jobs[i].cv, &pool_mu);
    pthread_mutex_unlock(&pool_mu);
    for (size_t i = 0; i < nj; i++) pthread_cond_destroy(&jobs[i].cv);
}

static PyObject *py_lsh_query_batch(PyObject *self, PyObject *args) {
    PyObject *items;
    if (!PyArg_ParseTuple(args, "O!", &PyList_Type, &items)) return NULL;
    Py_ssize_t ni = PyList_GET_SIZE(items);
    size_t nj = 0, nwords = 0;
    /* First pass: check every item and count the CLKs. */
    for (Py_ssize_t it = 0; it < ni; it++) {
        PyObject *item = PyList_GET_ITEM(items, it), *caps, *cuts, *qobj;
        double t;
        if (!PyTuple_Check(item) || !PyArg_ParseTuple(item, "O!SdO!", &PyTuple_Type, &caps,
                                                      &qobj, &t, &PyTuple_Type, &cuts))
            return PyErr_Occurred() ? NULL
                                    : (PyErr_SetString(PyExc_TypeError, "items: tuples"), NULL);
        Py_ssize_t k = PyTuple_GET_SIZE(caps);
        if (k < 1 || k > MAX_MANY || PyTuple_GET_SIZE(cuts) != k) {
            PyErr_SetString(PyExc_ValueError, "capsules and cuts: tuples of one length, 1-256");
            return NULL;
        }
        prepared_t *p0 = PyCapsule_GetPointer(PyTuple_GET_ITEM(caps, 0), "blindmatch.lsh");
        if (!p0) return NULL;
        size_t qb = p0->w * 8, len = (size_t)PyBytes_GET_SIZE(qobj);
        for (Py_ssize_t i = 1; i < k; i++) {
            prepared_t *pi = PyCapsule_GetPointer(PyTuple_GET_ITEM(caps, i), "blindmatch.lsh");
            if (!pi) return NULL;
            if (pi->w != p0->w) {
                PyErr_SetString(PyExc_ValueError, "capsules: indexes of one CLK length");
                return NULL;
            }
        }
        if (len == 0 || len % qb) {
            PyErr_SetString(PyExc_ValueError, "queries: whole CLKs of the indexes' length");
            return NULL;
        }
        nj += len / qb;
        nwords += len / 8;
    }
    if (nj > MAX_BATCH) {
        PyErr_SetString(PyExc_ValueError, "at most 4096 CLKs in one batch");
        return NULL;
    }
    job_t *jobs = PyMem_Calloc(nj + 1, sizeof(job_t));
    uint64_t *qs = PyMem_Malloc(nwords * 8 + 8);
    if (!jobs || !qs) {
        PyMem_Free(jobs);
        PyMem_Free(qs);
        return PyErr_NoMemory();
    }
    /* Second pass: one job per CLK. */
    size_t j = 0, at = 0;
    for (Py_ssize_t it = 0; it < ni; it++) {
        PyObject *caps, *cuts, *qobj;
        double t;
        PyArg_ParseTuple(PyList_GET_ITEM(items, it), "O!SdO!", &PyTuple_Type, &caps, &qobj, &t,
                         &PyTuple_Type, &cuts);
        Py_ssize_t k = PyTuple_GET_SIZE(caps);
        prepared_t *p0 = PyCapsule_GetPointer(PyTuple_GET_ITEM(caps, 0), "blindmatch.lsh");
        size_t w = p0->w, count = (size_t)PyBytes_GET_SIZE(qobj) / (w * 8);
        memcpy(qs + at, PyBytes_AS_STRING(qobj), count * w * 8);
        for (size_t c = 0; c < count; c++, j++) {
            job_t *jb = &jobs[j];
            prepared_t **ps = PyMem_Calloc((size_t)k, sizeof(prepared_t *));
            long *cs = PyMem_Calloc((size_t)k, sizeof(long));
            jb->os = PyMem_Calloc((size_t)k, sizeof(out_t));
            jb->counts = PyMem_Calloc(2 * (size_t)k, sizeof(size_t));
            jb->ps = ps;
            jb->cuts = cs;
            jb->k = (ps && cs && jb->os && jb->counts) ? k : 0;
            if (!jb->k) {
                batch_free(jobs, j + 1, qs);
                return PyErr_NoMemory();
            }
            for (Py_ssize_t i = 0; i < k; i++) {
                ps[i] = PyCapsule_GetPointer(PyTuple_GET_ITEM(caps, i), "blindmatch.lsh");
                cs[i] = PyLong_AsLong(PyTuple_GET_ITEM(cuts, i));
            }
            if (PyErr_Occurred()) {
                batch_free(jobs, j + 1, qs);
                return NULL;
            }
            jb->q = qs + at + c * w;
            jb->pa = popcount_row(jb->q, w);
            jb->t = t;
        }
        at += count * w;
    }
    Py_BEGIN_ALLOW_THREADS
    pool_run_all(jobs, nj);
    Py_END_ALLOW_THREADS
    PyObject *answer = PyList_New((Py_ssize_t)nj);
    for (size_t i = 0; answer && i < nj; i++) {
        PyObject *list = PyList_New(jobs[i].k);
        for (Py_ssize_t k = 0; list && k < jobs[i].k; k++) {
            PyObject *one = one_result(&jobs[i].os[k], jobs[i].counts[2 * k],
                                       jobs[i].counts[2 * k + 1]); /* frees os[k] */
            memset(&jobs[i].os[k], 0, sizeof(out_t));                 /* so batch_free won't */
            if (!one) Py_CLEAR(list);
            else PyList_SET_ITEM(list, k, one);
        }
        if (!list) Py_CLEAR(answer);
        else PyList_SET_ITEM(answer, (Py_ssize_t)i, list);
    }
    batch_free(jobs, nj, qs); /* frees the answers not made (an error on the way) */
    return answer;
}

/* ---- the machine's limit: AND + VPOPCNTQ + ADD and nothing else -----------------
 *
 * peak(reps) -> pairs
 *     runs the dense kernel's inner loop with nothing around it: 8 rows of a (1024-bit
 *     CLKs, from L1) against 16 blocks of 8 rows of b (word-major, 16 KiB: L1), the
 *     counts kept in registers, no threshold test, no output; `reps` times over. Returns
 *     the pairs it compared (reps x 1024), or 0 where the CPU has no AVX-512 VPOPCNTQ.
 *     benchmarks/kernelpeak.py times it: the pairs/s/core no 1024-bit kernel of this
 *     shape can beat on this CPU, to hold `dense`'s rate against. */

#define PEAK_W 16
#define PEAK_BLOCKS 16

#if BM_X86
__attribute__((target("avx512f,avx512dq,avx512vpopcntdq")))
static uint64_t peak_avx512(const uint64_t *a, const uint64_t *bt, size_t reps) {
    __m512i acc[8];
    for (int r = 0; r < 8; r++) acc[r] = _mm512_setzero_si512();
    for (size_t rep = 0; rep < reps; rep++) {
        for (size_t blk = 0; blk < PEAK_BLOCKS; blk++) {
            const uint64_t *col = bt + blk * PEAK_W * 8;
            for (size_t k = 0; k < PEAK_W; k++) {
                __m512i bv = _mm512_load_si512((const void *)(col + k * 8));
                for (int r = 0; r < 8; r++)
                    acc[r] = _mm512_add_epi64(
                        acc[r], _mm512_popcnt_epi64(_mm512_and_si512(
                                    _mm512_set1_epi64((long long)a[r * PEAK_W + k]), bv)));
            }
        }
        /* Keep the compiler from hoisting anything out of the rep loop. */
        __asm__ volatile("" : "+r"(bt), "+r"(a) : : "memory");
        for (int r = 0; r < 8; r++) __asm__ volatile("" : "+v"(acc[r]));
    }
    __m512i sum = acc[0];
    for (int r = 1; r < 8; r++) sum = _mm512_add_epi64(sum, acc[r]);
    return (uint64_t)_mm512_reduce_add_epi64(sum);
}
#endif

static PyObject *py_peak(PyObject *self, PyObject *args) {
    Py_ssize_t reps;
    if (!PyArg_ParseTuple(args, "n", &reps)) return NULL;
    if (reps < 0) {
        PyErr_SetString(PyExc_ValueError, "reps: 0 or more");
        return NULL;
    }
    if (!have_avx512()) return PyLong_FromLong(0);
#if BM_X86
    uint64_t *a = aligned_alloc(64, 8 * PEAK_W * 8);
    uint64_t *bt = aligned_alloc(64, PEAK_BLOCKS * PEAK_W * 8 * 8);
    if (!a || !bt) {
        free(a);
        free(bt);
        return PyErr_NoMemory();
    }
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < 8 * PEAK_W; i++) a[i] = (x = x * 6364136223846793005ull + 1);
    for (size_t i = 0; i < PEAK_BLOCKS * PEAK_W * 8; i++)
        bt[i] = (x = x * 6364136223846793005ull + 1);
    uint64_t sink;
    Py_BEGIN_ALLOW_THREADS
    sink = peak_avx512(a, bt, (size_t)reps);
    Py_END_ALLOW_THREADS
    free(a);
    free(bt);
    (void)sink;
    return PyLong_FromUnsignedLongLong((unsigned long long)reps * PEAK_BLOCKS * 64);
#else
    return PyLong_FromLong(0);
#endif
}

static PyObject *py_paths(PyObject *self, PyObject *noargs) {
    if (have_avx512()) return Py_BuildValue("[sss]", "avx512", "popcnt", "generic");
    if (have_popcnt()) return Py_BuildValue("[ss]", "popcnt", "generic");
    return Py_BuildValue("[s]", "generic");
}

static PyMethodDef methods[] = {
    {"dense", py_dense, METH_VARARGS, "dense(a, b, words, threshold, path='auto')"},
    {"pairs", py_pairs, METH_VARARGS, "pairs(a, b, words, ia, ib, threshold)"},
    {"dice_each", py_dice_each, METH_VARARGS,
     "dice_each(a, b, words, ia, ib, out, path='auto'): out[k] = Dice(a[ia[k]], b[ib[k]])"},
    {"lsh_pairs", py_lsh_pairs, METH_VARARGS,
     "lsh_pairs(a, b, words, positions, bits_per_band, threshold) -> "
     "((sims, rows_a, rows_b), comparisons)"},
    {"dedupe", py_dedupe, METH_VARARGS,
     "dedupe(sims, rows_a, rows_b, out_sims, out_a, out_b) -> n: each pair once, in order"},
    {"scan", py_scan, METH_VARARGS, "scan(clks, words, popcounts, query, threshold)"},
    {"lsh_build", py_lsh_build, METH_VARARGS,
     "lsh_build(clks, words, positions, bits_per_band, offsets, rows)"},
    {"sketch", py_sketch, METH_VARARGS, "sketch(clks, words, sketch_positions, out)"},
    {"lsh_prepare", py_lsh_prepare, METH_VARARGS,
     "lsh_prepare(clks, words, positions, bits_per_band, offsets, rows, radius, "
     "sketch_positions, sketches, cuts[, hits]) -> capsule"},
    {"lsh_query", py_lsh_query, METH_VARARGS, "lsh_query(capsule, query, threshold, cut)"},
    {"scan_prepare", py_scan_prepare, METH_VARARGS,
     "scan_prepare(clks, words, popcounts) -> capsule: a segment lsh_query* scan in full"},
    {"lsh_query_many", py_lsh_query_many, METH_VARARGS,
     "lsh_query_many(capsules, query, threshold, cuts) -> [lsh_query's answer per capsule]"},
    {"lsh_pool", py_lsh_pool, METH_VARARGS,
     "lsh_pool(cpus, threads) -> running: look-ups on threads of their own"},
    {"lsh_query_batch", py_lsh_query_batch, METH_VARARGS,
     "lsh_query_batch([(capsules, queries, threshold, cuts), ...]) -> per CLK, "
     "lsh_query_many's answer"},
    {"peak", py_peak, METH_VARARGS,
     "peak(reps) -> pairs: the AND + VPOPCNTQ + ADD loop alone (benchmarks/kernelpeak.py)"},
    {"pair_messages", py_pair_messages, METH_VARARGS,
     "pair_messages(shares_a, shares_b, width, rows_a, rows_b, dset_a, dset_b, key) -> "
     "permuted share differences (bytes), or None without AES instructions"},
    {"rows_times", py_rows_times, METH_VARARGS,
     "rows_times(vecs, rows, mat, itemsize, out, mat2=None, path='auto') -> path: "
     "out = vecs (mat + mat2)^T mod 2^32 (a standing partner's products)"},
    {"dabit_first", py_dabit_first, METH_VARARGS,
     "dabit_first(bits, word, t, spare, role, masked, pad, width=8): ring64's first message"},
    {"dabit_converted", py_dabit_converted, METH_VARARGS,
     "dabit_converted(bits, p, q, t, spare, pad, masked, role, out, check, width=8): fused"},
    {"dabit_deal", py_dabit_deal, METH_VARARGS,
     "dabit_deal(x, y, p1, x_, y_, q1, out_p, out_q, width=8): C's explicit daBit values"},
    {"greedy_pairs", py_greedy_pairs, METH_VARARGS,
     "greedy_pairs(x, y, n_x, n_y, out) -> pairs chosen, -1 or -2 (_greedy.c)"},
    {"radix_order", py_radix_order, METH_VARARGS,
     "radix_order(key, out): out the stable order sorting key (uint64), key sorted (_radix.c)"},
    {"paths", py_paths, METH_NOARGS, "The kernel paths this CPU can run, best first."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_kernel", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__kernel(void) { return PyModule_Create(&module); }
