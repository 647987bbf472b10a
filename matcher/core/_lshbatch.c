/*
 * Batch LSH blocking, native: included by _kernel.c after `pairs` (it uses that file's
 * anonlink test, `max_delta` and `passes`, its output buffer, `check_clks` and its CPU
 * checks).
 *
 *   lsh_pairs(a, b, words, positions, bits_per_band, threshold)
 *       -> ((sims, rows_a, rows_b), comparisons)
 *
 * For every band (a row of `positions`, int32 bands*r: bit p is bit p % 64 of 64-bit word
 * p / 64), the rows of `a` and of `b` whose sampled bits spell the same key collide, and
 * every colliding pair is decided by anonlink's exact test. Each pair reaching the
 * threshold is returned once however many bands it collides in; `comparisons` counts
 * every colliding pair of every band (what blocking proposed). The threshold must be
 * positive (rows with no bits set are skipped: they pass only a threshold <= 0).
 *
 * How it is cheap: the keys of a group of bands are computed in one pass over the rows
 * (each row read once per group, not once per band; PEXT where the CPU has BMI2); each
 * band's keys are radix-sorted (11 bits a pass) on both sides and merged into runs of
 * equal keys; each run is scored as a small dense tile: its rows of `b` are copied into
 * one contiguous buffer (blocks of 8 rows, word-major, for a wide tile: the dense
 * kernel's layout) and every row of `a`'s run is held in registers against it (AVX-512
 * VPOPCNTQ where the CPU has it), instead of gathering both rows of every pair. The rows
 * of the runs ahead are prefetched: reading them (cache misses) is most of the cost.
 * Found pairs go into an open-addressing set, which removes the duplicates.
 *
 *   dedupe(sims, rows_a, rows_b, out_sims, out_a, out_b) -> n kept   (at the end)
 */

#define LSHB_GROUP 16 /* bands whose keys are computed in one pass over the rows */

typedef struct {
    uint64_t *keys; /* (i << 32) | j, or UINT64_MAX for an empty slot */
    double *sims;
    size_t cap, n;
    int failed;
} pairset_t;

static int pairset_init(pairset_t *s, size_t cap) {
    s->cap = cap;
    s->n = 0;
    s->failed = 0;
    s->keys = malloc(cap * sizeof(uint64_t));
    s->sims = malloc(cap * sizeof(double));
    if (!s->keys || !s->sims) return -1;
    memset(s->keys, 0xff, cap * sizeof(uint64_t));
    return 0;
}

static inline size_t pairset_slot(uint64_t key, size_t cap) {
    return (size_t)((key * 0x9E3779B97F4A7C15ull) >> 17) & (cap - 1);
}

static void pairset_add(pairset_t *s, uint64_t key, double sim);

static int pairset_grow(pairset_t *s) {
    pairset_t bigger;
    if (pairset_init(&bigger, s->cap * 2)) {
        free(bigger.keys);
        free(bigger.sims);
        return -1;
    }
    for (size_t k = 0; k < s->cap; k++)
        if (s->keys[k] != UINT64_MAX) pairset_add(&bigger, s->keys[k], s->sims[k]);
    free(s->keys);
    free(s->sims);
    *s = bigger;
    return 0;
}

static void pairset_add(pairset_t *s, uint64_t key, double sim) {
    if (2 * (s->n + 1) > s->cap && pairset_grow(s)) {
        s->failed = 1;
        return;
    }
    size_t k = pairset_slot(key, s->cap);
    while (s->keys[k] != UINT64_MAX) {
        if (s->keys[k] == key) return;
        k = (k + 1) & (s->cap - 1);
    }
    s->keys[k] = key;
    s->sims[k] = sim;
    s->n++;
}

typedef struct {
    size_t w;
    uint32_t bits;
    double t, t_low; /* t_low: a hair under t, for a cheap multiply test before the exact one */
    const uint64_t *a, *b;
    const uint32_t *pa, *pb;
    uint64_t *buf; /* the b rows of a tile, contiguous (64-byte aligned) */
    uint32_t *bufj, *bufp;
    size_t buf_cap;
    double *bufh;   /* per b row of the tile: h * popcount (h a hair under t / 2); padding inf */
    uint64_t comparisons;
    pairset_t found;
} lshb_t;

static int lshb_reserve(lshb_t *s, size_t rows) {
    if (rows <= s->buf_cap) return 0;
    size_t cap = rows * 2;
    free(s->buf);
    free(s->bufj);
    free(s->bufp);
    free(s->bufh);
    cap = (cap + 7) / 8 * 8; /* whole blocks of 8 rows (the transposed layout) */
    s->buf = aligned_alloc(64, cap * s->w * 8);
    s->bufj = malloc(cap * sizeof(uint32_t));
    s->bufp = malloc(cap * sizeof(uint32_t));
    s->bufh = aligned_alloc(64, cap * sizeof(double));
    s->buf_cap = cap;
    return s->buf && s->bufj && s->bufp && s->bufh ? 0 : -1;
}

static inline void lshb_decide(lshb_t *s, uint32_t i, uint32_t pa, uint32_t delta, uint32_t c,
                               size_t y) {
    uint32_t pb = s->bufp[y];
    if ((double)(2u * c) < s->t_low * (double)(pa + pb)) return;
    double sim;
    if (passes(c, pa, pb, delta, s->t, &sim))
        pairset_add(&s->found, ((uint64_t)i << 32) | s->bufj[y], sim);
}

/* Rows ia[0..ka) of a against the kb rows of b already copied into s->buf. */
static void tile_scalar(lshb_t *s, const uint32_t *ia, size_t ka, size_t kb) {
    size_t w = s->w;
    for (size_t x = 0; x < ka; x++) {
        uint32_t i = ia[x], pa = s->pa[i];
        if (pa == 0) continue;
        uint32_t delta = max_delta(pa, s->t, s->bits);
        const uint64_t *ra = s->a + (size_t)i * w;
        for (size_t y = 0; y < kb; y++) {
            const uint64_t *rb = s->buf + y * w;
            uint32_t c = 0;
            for (size_t k = 0; k < w; k++) c += (uint32_t)__builtin_popcountll(ra[k] & rb[k]);
            lshb_decide(s, i, pa, delta, c, y);
        }
    }
}

#if BM_X86
__attribute__((target("popcnt"))) static void tile_popcnt(lshb_t *s, const uint32_t *ia,
                                                          size_t ka, size_t kb) {
    tile_scalar(s, ia, ka, kb);
}

/* 1024-bit CLKs: a row is two 512-bit vectors. */
__attribute__((target("avx512f,avx512dq,avx512vpopcntdq"))) static void tile_avx512_16(
    lshb_t *s, const uint32_t *ia, size_t ka, size_t kb) {
    for (size_t x = 0; x < ka; x++) {
        uint32_t i = ia[x], pa = s->pa[i];
        if (pa == 0) continue;
        uint32_t delta = max_delta(pa, s->t, s->bits);
        const uint64_t *ra = s->a + (size_t)i * 16;
        __m512i a0 = _mm512_loadu_si512((const void *)ra);
        __m512i a1 = _mm512_loadu_si512((const void *)(ra + 8));
        for (size_t y = 0; y < kb; y++) {
            const uint64_t *rb = s->buf + y * 16;
            __m512i v = _mm512_add_epi64(
                _mm512_popcnt_epi64(_mm512_and_si512(a0, _mm512_load_si512((const void *)rb))),
                _mm512_popcnt_epi64(
                    _mm512_and_si512(a1, _mm512_load_si512((const void *)(rb + 8)))));
            lshb_decide(s, i, pa, delta, (uint32_t)_mm512_reduce_add_epi64(v), y);
        }
    }
}

#define LSHB_WIDE 4 /* b rows from which a tile is scored in the transposed layout */
#define LSHB_ROWS 8 /* rows of a scored together against a block of 8 rows of b */

/* 1024-bit CLKs, a tile with at least LSHB_WIDE rows of b: the b rows as blocks of 8,
 * word-major (one vector holds a word of 8 rows, as the dense kernel lays them out), so a
 * row of a is scored against 8 rows with no horizontal sums; lanes that clear a hair
 * under the threshold get the exact test. */
__attribute__((target("avx512f,avx512dq,avx512vpopcntdq"))) static void tile_avx512_wide(
    lshb_t *s, const uint32_t *ia, size_t ka, size_t kb) {
    size_t nblk = (kb + 7) / 8;
    double h = s->t * (1.0 - 1e-9) / 2.0;
    uint64_t *bt = s->buf;
    /* Transpose in place is not possible: the rows were copied row-major to buf; move them
     * to the transposed layout through a small stack block. */
    for (size_t blk = 0; blk < nblk; blk++) {
        uint64_t tmp[8 * 16];
        memset(tmp, 0, sizeof(tmp));
        for (size_t l = 0; l < 8 && blk * 8 + l < kb; l++)
            for (size_t k = 0; k < 16; k++) tmp[k * 8 + l] = bt[(blk * 8 + l) * 16 + k];
        memcpy(bt + blk * 128, tmp, sizeof(tmp));
        for (size_t l = 0; l < 8; l++) {
            size_t y = blk * 8 + l;
            s->bufh[y] = y < kb ? h * s->bufp[y] : INFINITY;
        }
    }
    /* LSHB_ROWS rows of a at a time, so each vector of b is loaded once for all of them. */
    for (size_t x0 = 0; x0 < ka; x0 += LSHB_ROWS) {
        const uint64_t *ra[LSHB_ROWS];
        uint32_t ii[LSHB_ROWS], pa[LSHB_ROWS], delta[LSHB_ROWS];
        __m512d ha[LSHB_ROWS];
        for (size_t r = 0; r < LSHB_ROWS; r++) {
            size_t x = x0 + r < ka ? x0 + r : x0; /* past the end: row x0 again, never kept */
            ii[r] = ia[x];
            pa[r] = s->pa[ii[r]];
            delta[r] = max_delta(pa[r], s->t, s->bits);
            ra[r] = s->a + (size_t)ii[r] * 16;
            ha[r] = _mm512_set1_pd(x0 + r < ka && pa[r] ? h * pa[r] : INFINITY);
        }
        for (size_t blk = 0; blk < nblk; blk++) {
            const uint64_t *col = bt + blk * 128;
            __m512i acc[LSHB_ROWS];
            for (size_t r = 0; r < LSHB_ROWS; r++) acc[r] = _mm512_setzero_si512();
            for (size_t k = 0; k < 16; k++) {
                __m512i bv = _mm512_load_si512((const void *)(col + k * 8));
                for (size_t r = 0; r < LSHB_ROWS; r++)
                    acc[r] = _mm512_add_epi64(
                        acc[r], _mm512_popcnt_epi64(_mm512_and_si512(
                                    _mm512_set1_epi64((long long)ra[r][k]), bv)));
            }
            __m512d hbv = _mm512_load_pd(s->bufh + blk * 8);
            for (size_t r = 0; r < LSHB_ROWS; r++) {
                __mmask8 m = _mm512_cmp_pd_mask(_mm512_cvtepi64_pd(acc[r]),
                                                _mm512_add_pd(ha[r], hbv), _CMP_GE_OQ);
                if (!m) continue;
                uint64_t counts[8];
                _mm512_storeu_si512((void *)counts, acc[r]);
                while (m) {
                    int lane = __builtin_ctz(m);
                    m &= (__mmask8)(m - 1);
                    size_t y = blk * 8 + (size_t)lane;
                    double sim;
                    if (passes((uint32_t)counts[lane], pa[r], s->bufp[y], delta[r], s->t, &sim))
                        pairset_add(&s->found, ((uint64_t)ii[r] << 32) | s->bufj[y], sim);
                }
            }
        }
    }
}

/* 1024-bit CLKs: row-major for a narrow tile, transposed for a wide one. */
__attribute__((target("avx512f,avx512dq,avx512vpopcntdq"))) static void tile_avx512_1024(
    lshb_t *s, const uint32_t *ia, size_t ka, size_t kb) {
    if (kb >= LSHB_WIDE && ka >= 2) tile_avx512_wide(s, ia, ka, kb);
    else tile_avx512_16(s, ia, ka, kb);
}

/* Any multiple of 512 bits. */
__attribute__((target("avx512f,avx512dq,avx512vpopcntdq"))) static void tile_avx512(
    lshb_t *s, const uint32_t *ia, size_t ka, size_t kb) {
    size_t w = s->w;
    for (size_t x = 0; x < ka; x++) {
        uint32_t i = ia[x], pa = s->pa[i];
        if (pa == 0) continue;
        uint32_t delta = max_delta(pa, s->t, s->bits);
        const uint64_t *ra = s->a + (size_t)i * w;
        for (size_t y = 0; y < kb; y++) {
            const uint64_t *rb = s->buf + y * w;
            __m512i v = _mm512_setzero_si512();
            for (size_t k = 0; k < w; k += 8)
                v = _mm512_add_epi64(
                    v, _mm512_popcnt_epi64(
                           _mm512_and_si512(_mm512_loadu_si512((const void *)(ra + k)),
                                            _mm512_load_si512((const void *)(rb + k)))));
            lshb_decide(s, i, pa, delta, (uint32_t)_mm512_reduce_add_epi64(v), y);
        }
    }
}
#endif

/* A band as (word, mask) pieces: its key is the pext of each piece, side by side. */
typedef struct {
    int n;
    uint16_t word[32];
    uint8_t shift[32];
    uint64_t mask[32];
} band_pieces_t;

static void band_pieces(const int32_t *pos, int r, band_pieces_t *bp) {
    bp->n = 0;
    for (int j = 0; j < r; j++) {
        uint32_t p = (uint32_t)pos[j];
        int k = 0;
        while (k < bp->n && bp->word[k] != (p >> 6)) k++;
        if (k == bp->n) {
            bp->word[k] = (uint16_t)(p >> 6);
            bp->mask[k] = 0;
            bp->n++;
        }
        bp->mask[k] |= 1ull << (p & 63);
    }
    int off = 0;
    for (int k = 0; k < bp->n; k++) {
        bp->shift[k] = (uint8_t)off;
        off += __builtin_popcountll(bp->mask[k]);
    }
}

static void keys_generic(const uint64_t *x, size_t n, size_t w, const int32_t *pos, int r,
                         size_t ng, const band_pieces_t *bp, uint32_t *keys) {
    (void)bp;
    for (size_t i = 0; i < n; i++)
        for (size_t g = 0; g < ng; g++) {
            const int32_t *p = pos + g * r;
            uint32_t key = 0;
            for (int j = 0; j < r; j++)
                key |= (uint32_t)((x[i * w + ((uint32_t)p[j] >> 6)] >> (p[j] & 63)) & 1u) << j;
            keys[g * n + i] = key;
        }
}

#if BM_X86
__attribute__((target("bmi2"))) static void keys_bmi2(const uint64_t *x, size_t n, size_t w,
                                                      const int32_t *pos, int r, size_t ng,
                                                      const band_pieces_t *bp, uint32_t *keys) {
    (void)pos;
    for (size_t i = 0; i < n; i++) {
        const uint64_t *row = x + i * w;
        for (size_t g = 0; g < ng; g++) {
            const band_pieces_t *b = bp + g;
            uint64_t k0 = 0, k1 = 0;
            int k = 0;
            for (; k + 2 <= b->n; k += 2) {
                k0 |= _pext_u64(row[b->word[k]], b->mask[k]) << b->shift[k];
                k1 |= _pext_u64(row[b->word[k + 1]], b->mask[k + 1]) << b->shift[k + 1];
            }
            if (k < b->n) k0 |= _pext_u64(row[b->word[k]], b->mask[k]) << b->shift[k];
            keys[g * n + i] = (uint32_t)(k0 | k1);
        }
    }
}

static int have_bmi2(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("bmi2");
}
#endif

typedef void (*keys_fn)(const uint64_t *, size_t, size_t, const int32_t *, int, size_t,
                        const band_pieces_t *, uint32_t *);

typedef void (*tile_fn)(lshb_t *, const uint32_t *, size_t, size_t);

/* One run of equal keys: rows ia[0..ka) of a, jb[0..kb) of b. */
static int lshb_tile(lshb_t *s, tile_fn tile, const uint32_t *ia, size_t ka, const uint32_t *jb,
                     size_t kb) {
    s->comparisons += (uint64_t)ka * kb;
    if (lshb_reserve(s, kb)) return -1;
    for (size_t y = 0; y < kb; y++) {
        memcpy(s->buf + y * s->w, s->b + (size_t)jb[y] * s->w, s->w * 8);
        s->bufj[y] = jb[y];
        s->bufp[y] = s->pb[jb[y]];
    }
    tile(s, ia, ka, kb);
    return s->found.failed ? -1 : 0;
}

/* The rows the runs of a band will read, in the order they read them (each run's rows of
 * b, then its rows of a), walked ahead of the work to prefetch them. */
typedef struct {
    const uint32_t *rx, *rxe, *ry, *rye; /* runs: sorted positions [x, xe) of a, [y, ye) of b */
    size_t runs, run;
    uint32_t at; /* next sorted position of the current run to prefetch */
    int side;    /* 0: b's rows, 1: a's */
} ahead_t;

#define LSHB_AHEAD 24 /* rows prefetched ahead of the one being read */

static inline void ahead_step(ahead_t *h, const lshb_t *s, const uint32_t *ord_a,
                              const uint32_t *ord_b, size_t count) {
    while (count-- && h->run < h->runs) {
        if (h->side == 0) {
            uint32_t j = ord_b[h->at];
            const char *row = (const char *)(s->b + (size_t)j * s->w);
            __builtin_prefetch(row);
            __builtin_prefetch(row + 64);
            __builtin_prefetch(s->pb + j);
            if (++h->at == h->rye[h->run]) {
                h->side = 1;
                h->at = h->rx[h->run];
            }
        } else {
            uint32_t i = ord_a[h->at];
            const char *row = (const char *)(s->a + (size_t)i * s->w);
            __builtin_prefetch(row);
            __builtin_prefetch(row + 64);
            __builtin_prefetch(s->pa + i);
            if (++h->at == h->rxe[h->run]) {
                h->side = 0;
                if (++h->run < h->runs) h->at = h->ry[h->run];
            }
        }
    }
}

/* LSD radix sort of rows by key, 11 bits a pass (a 2048-entry histogram stays in L1):
 * ord[] the rows, skeys[] their keys, in key order; tmp_* scratch of n each. */
static void lshb_sort(const uint32_t *keys, size_t n, int r, uint32_t *ord, uint32_t *skeys,
                      uint32_t *tmp_ord, uint32_t *tmp_keys) {
    int passes = (r + 10) / 11;
    static __thread uint32_t hist[3][2048];
    memset(hist, 0, sizeof(hist));
    for (size_t i = 0; i < n; i++)
        for (int d = 0; d < passes; d++) hist[d][(keys[i] >> (11 * d)) & 2047]++;
    for (int d = 0; d < passes; d++) {
        uint32_t sum = 0;
        for (int v = 0; v < 2048; v++) {
            uint32_t c = hist[d][v];
            hist[d][v] = sum;
            sum += c;
        }
    }
    /* Ping-pong so that the last pass lands in ord/skeys. */
    const uint32_t *src_k = keys, *src_o = NULL;
    for (int d = 0; d < passes; d++) {
        uint32_t *dst_k = ((passes - 1 - d) % 2 == 0) ? skeys : tmp_keys;
        uint32_t *dst_o = ((passes - 1 - d) % 2 == 0) ? ord : tmp_ord;
        uint32_t *h = hist[d];
        for (size_t i = 0; i < n; i++) {
            uint32_t k = src_k[i];
            uint32_t at = h[(k >> (11 * d)) & 2047]++;
            dst_k[at] = k;
            dst_o[at] = src_o ? src_o[i] : (uint32_t)i;
        }
        src_k = dst_k;
        src_o = dst_o;
    }
}

static PyObject *py_lsh_pairs(PyObject *self, PyObject *args) {
    Py_buffer va, vb, vpos;
    Py_ssize_t words;
    long r;
    double t;
    if (!PyArg_ParseTuple(args, "y*y*ny*ld", &va, &vb, &words, &vpos, &r, &t)) return NULL;
    PyObject *ret = NULL;
    size_t w = (size_t)words, na = 0, nb = 0, bands = 0;
    lshb_t s = {0};
    uint32_t *keys_a = NULL, *keys_b = NULL, *pa = NULL, *pb = NULL;
    uint32_t *tmp_o = NULL, *tmp_k = NULL, *ord_a = NULL, *ord_b = NULL;
    uint32_t *run_x = NULL, *run_xe = NULL, *run_y = NULL, *run_ye = NULL;
    uint32_t *sk_a = NULL, *sk_b = NULL;
    int rc = 0;
    if (words <= 0 || words > (1 << 20)) {
        PyErr_SetString(PyExc_ValueError, "words must be positive");
        goto done;
    }
    if (check_clks(&va, w, "a", &na) || check_clks(&vb, w, "b", &nb)) goto done;
    if (na >= UINT32_MAX || nb >= UINT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "too many rows");
        goto done;
    }
    if (r < 1 || r > 32 || vpos.len % (Py_ssize_t)(4 * r)) {
        PyErr_SetString(PyExc_ValueError, "bits_per_band must be 1-32; positions int32 bands*r");
        goto done;
    }
    bands = (size_t)vpos.len / (4 * (size_t)r);
    const int32_t *pos = vpos.buf;
    for (size_t k = 0; k < bands * (size_t)r; k++)
        if (pos[k] < 0 || (size_t)pos[k] >= w * 64) {
            PyErr_SetString(PyExc_ValueError, "a sampled bit position is outside the CLK");
            goto done;
        }
    if (((uintptr_t)va.buf % 8) || ((uintptr_t)vb.buf % 8)) {
        PyErr_SetString(PyExc_ValueError, "a and b must be 8-byte aligned");
        goto done;
    }
    tile_fn tile = tile_scalar;
#if BM_X86
    if (have_avx512() && w == 16) tile = tile_avx512_1024;
    else if (have_avx512() && w % 8 == 0) tile = tile_avx512;
    else if (have_popcnt()) tile = tile_popcnt;
#endif
    size_t most = na > nb ? na : nb;
    size_t group = bands < LSHB_GROUP ? bands : LSHB_GROUP;
    keys_fn make_keys = keys_generic;
#if BM_X86
    if (have_bmi2()) make_keys = keys_bmi2;
#endif
    band_pieces_t pieces[LSHB_GROUP];
    Py_BEGIN_ALLOW_THREADS
    s.w = w;
    s.bits = (uint32_t)(w * 64);
    s.t = t;
    s.t_low = t * (1.0 - 1e-9);
    s.a = va.buf;
    s.b = vb.buf;
    pa = malloc((na + 1) * sizeof(uint32_t));
    pb = malloc((nb + 1) * sizeof(uint32_t));
    keys_a = malloc((group * na + 1) * sizeof(uint32_t));
    keys_b = malloc((group * nb + 1) * sizeof(uint32_t));
    size_t fewest = (na < nb ? na : nb) + 1;
    run_x = malloc(fewest * sizeof(uint32_t));
    run_xe = malloc(fewest * sizeof(uint32_t));
    run_y = malloc(fewest * sizeof(uint32_t));
    run_ye = malloc(fewest * sizeof(uint32_t));
    tmp_o = malloc((most + 1) * sizeof(uint32_t));
    tmp_k = malloc((most + 1) * sizeof(uint32_t));
    ord_a = malloc((na + 1) * sizeof(uint32_t));
    ord_b = malloc((nb + 1) * sizeof(uint32_t));
    sk_a = malloc((na + 1) * sizeof(uint32_t));
    sk_b = malloc((nb + 1) * sizeof(uint32_t));
    if (!pa || !pb || !keys_a || !keys_b || !tmp_o || !tmp_k || !run_x || !run_xe || !run_y ||
        !run_ye || !ord_a || !ord_b || !sk_a ||
        !sk_b || pairset_init(&s.found, 1024) || lshb_reserve(&s, 64))
        rc = -1;
    if (!rc) {
        for (size_t i = 0; i < na; i++) pa[i] = popcount_row(s.a + i * w, w);
        for (size_t j = 0; j < nb; j++) pb[j] = popcount_row(s.b + j * w, w);
        s.pa = pa;
        s.pb = pb;
        /* Rows with no bits set pass only a threshold <= 0, which compares exhaustively. */
    }
    for (size_t g0 = 0; !rc && g0 < bands; g0 += group) {
        size_t ng = bands - g0 < group ? bands - g0 : group;
        for (size_t g = 0; g < ng; g++) band_pieces(pos + (g0 + g) * r, (int)r, pieces + g);
        make_keys(s.a, na, w, pos + g0 * r, (int)r, ng, pieces, keys_a);
        make_keys(s.b, nb, w, pos + g0 * r, (int)r, ng, pieces, keys_b);
        for (size_t g = 0; !rc && g < ng; g++) {
                lshb_sort(keys_a + g * na, na, (int)r, ord_a, sk_a, tmp_o, tmp_k);
            lshb_sort(keys_b + g * nb, nb, (int)r, ord_b, sk_b, tmp_o, tmp_k);
            /* The runs of equal keys (a merge of the two sorted lists), then their tiles. */
            size_t x = 0, y = 0, runs = 0;
            while (x < na && y < nb) {
                if (sk_a[x] < sk_b[y]) x++;
                else if (sk_a[x] > sk_b[y]) y++;
                else {
                    uint32_t k = sk_a[x];
                    size_t xe = x, ye = y;
                    while (xe < na && sk_a[xe] == k) xe++;
                    while (ye < nb && sk_b[ye] == k) ye++;
                    run_x[runs] = (uint32_t)x;
                    run_xe[runs] = (uint32_t)xe;
                    run_y[runs] = (uint32_t)y;
                    run_ye[runs] = (uint32_t)ye;
                    runs++;
                    x = xe;
                    y = ye;
                }
            }
            ahead_t h = {run_x, run_xe, run_y, run_ye, runs, 0, runs ? run_y[0] : 0, 0};
            ahead_step(&h, &s, ord_a, ord_b, LSHB_AHEAD);
            for (size_t q = 0; !rc && q < runs; q++) {
                size_t ka = run_xe[q] - run_x[q], kb = run_ye[q] - run_y[q];
                ahead_step(&h, &s, ord_a, ord_b, ka + kb);
                rc = lshb_tile(&s, tile, ord_a + run_x[q], ka, ord_b + run_y[q], kb);
            }
        }
    }
    free(keys_a);
    free(keys_b);
    keys_a = keys_b = NULL;
    Py_END_ALLOW_THREADS
    if (rc) {
        PyErr_NoMemory();
        goto done;
    }
    {
        out_t o = {0};
        for (size_t k = 0; k < s.found.cap; k++) {
            uint64_t key = s.found.keys[k];
            if (key != UINT64_MAX) out_push(&o, s.found.sims[k], (uint32_t)(key >> 32), (uint32_t)key);
        }
        PyObject *found = results(&o, 1);
        if (found) ret = Py_BuildValue("(NK)", found, (unsigned long long)s.comparisons);
    }
done:
    free(keys_a);
    free(keys_b);
    free(pa);
    free(pb);
    free(tmp_o);
    free(tmp_k);
    free(run_x);
    free(run_xe);
    free(run_y);
    free(run_ye);
    free(ord_a);
    free(ord_b);
    free(sk_a);
    free(sk_b);
    free(s.buf);
    free(s.bufj);
    free(s.bufp);
    free(s.bufh);
    free(s.found.keys);
    free(s.found.sims);
    PyBuffer_Release(&va);
    PyBuffer_Release(&vb);
    PyBuffer_Release(&vpos);
    return ret;
}

/*
 *   dedupe(sims, rows_a, rows_b, out_sims, out_a, out_b) -> n kept
 *
 * Each pair (rows_a[k], rows_b[k]) once, ordered by (row of A, row of B), with the score of
 * its first copy (blocking.dedupe, whose numpy version is the oracle in the tests: one
 * score a pair, so any copy gives the same output). The key (a << bits of b) | b is
 * LSD radix-sorted 11 bits a pass (stable; a pass whose digit is the same for every key is
 * skipped), then written out where it changes. Where the key and the input position fit
 * in 64 bits (1,000,000 x 1,000,000 rows: up to 2^24 pairs) each item is that one word,
 * the position below the key, and the score is read by position at the end; otherwise an
 * item is the key and its score (16 bytes). perf put half the time of the 16-byte items
 * on the kernel clearing fresh pages for the buffers, so the smaller item pays twice. The
 * outs hold as many elements as the inputs. The GIL is released.
 */
typedef struct {
    uint64_t key;
    double sim;
} dd_item_t;

#define DD_BITS 11
#define DD_BUCKETS (1u << DD_BITS)

static int dd_bits(uint64_t v) {
    int bits = 1;
    while (bits < 64 && (v >> bits)) bits++;
    return bits;
}

/* Turns the counts of a digit into starts; 1 where every key has the same digit. */
static int dd_starts(size_t *h, size_t n) {
    size_t sum = 0;
    int one = 0;
    for (size_t d = 0; d < DD_BUCKETS; d++) {
        if (h[d] == n) one = 1;
        size_t c = h[d];
        h[d] = sum;
        sum += c;
    }
    return one;
}

static PyObject *py_dedupe(PyObject *self, PyObject *args) {
    Py_buffer vs, va, vb, os, oa, ob;
    if (!PyArg_ParseTuple(args, "y*y*y*w*w*w*", &vs, &va, &vb, &os, &oa, &ob)) return NULL;
    PyObject *ret = NULL;
    void *x = NULL, *y = NULL;
    size_t(*hist)[DD_BUCKETS] = NULL;
    size_t n = (size_t)vs.len / sizeof(double), kept = 0;
    int nomem = 0;
    if ((size_t)vs.len % sizeof(double) || (size_t)va.len != n * 4 || (size_t)vb.len != n * 4 ||
        (size_t)os.len != n * sizeof(double) || (size_t)oa.len != n * 4 ||
        (size_t)ob.len != n * 4 || (uintptr_t)vs.buf % 8 || (uintptr_t)va.buf % 4 ||
        (uintptr_t)vb.buf % 4 || (uintptr_t)os.buf % 8 || (uintptr_t)oa.buf % 4 ||
        (uintptr_t)ob.buf % 4) {
        PyErr_SetString(PyExc_ValueError,
                        "dedupe: sims float64, rows uint32, outs as long, all aligned");
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    const double *s = vs.buf;
    const uint32_t *a = va.buf, *b = vb.buf;
    double *out_s = os.buf;
    uint32_t *out_a = oa.buf, *out_b = ob.buf;
    uint32_t max_a = 0, max_b = 0;
    for (size_t k = 0; k < n; k++) {
        if (a[k] > max_a) max_a = a[k];
        if (b[k] > max_b) max_b = b[k];
    }
    int bits_b = dd_bits(max_b), bits = dd_bits(max_a) + bits_b;
    int pos_bits = dd_bits(n ? n - 1 : 0), packed = bits + pos_bits <= 64;
    int low = packed ? pos_bits : 0; /* the key's lowest bit in an item's first word */
    int passes = (bits + DD_BITS - 1) / DD_BITS;
    size_t item = packed ? sizeof(uint64_t) : sizeof(dd_item_t);
    x = malloc((n ? n : 1) * item);
    y = malloc((n ? n : 1) * item);
    hist = calloc((size_t)passes, sizeof *hist);
    if (!x || !y || !hist) {
        nomem = 1;
    } else {
        uint64_t *px = x, *py = y;
        dd_item_t *ix = x, *iy = y;
        for (size_t k = 0; k < n; k++) {
            uint64_t key = ((uint64_t)a[k] << bits_b) | b[k];
            if (packed) {
                px[k] = (key << low) | k;
            } else {
                ix[k].key = key;
                ix[k].sim = s[k];
            }
            for (int p = 0; p < passes; p++) hist[p][(key >> (p * DD_BITS)) & (DD_BUCKETS - 1)]++;
        }
        for (int p = 0; p < passes; p++) {
            size_t *h = hist[p];
            if (dd_starts(h, n)) continue; /* every key has this digit: the order stays */
            int shift = low + p * DD_BITS;
            if (packed) {
                for (size_t k = 0; k < n; k++) py[h[(px[k] >> shift) & (DD_BUCKETS - 1)]++] = px[k];
                uint64_t *t = px;
                px = py;
                py = t;
            } else {
                for (size_t k = 0; k < n; k++)
                    iy[h[(ix[k].key >> shift) & (DD_BUCKETS - 1)]++] = ix[k];
                dd_item_t *t = ix;
                ix = iy;
                iy = t;
            }
        }
        uint64_t mask_b = (1ull << bits_b) - 1, last = 0;
        for (size_t k = 0; k < n; k++) {
            uint64_t key = packed ? px[k] >> low : ix[k].key;
            if (k && key == last) continue;
            last = key;
            out_s[kept] = packed ? s[px[k] & ((1ull << low) - 1)] : ix[k].sim;
            out_a[kept] = (uint32_t)(key >> bits_b);
            out_b[kept] = (uint32_t)(key & mask_b);
            kept++;
        }
    }
    Py_END_ALLOW_THREADS
    if (nomem)
        PyErr_NoMemory();
    else
        ret = PyLong_FromSize_t(kept);
done:
    free(x);
    free(y);
    free(hist);
    PyBuffer_Release(&vs);
    PyBuffer_Release(&va);
    PyBuffer_Release(&vb);
    PyBuffer_Release(&os);
    PyBuffer_Release(&oa);
    PyBuffer_Release(&ob);
    return ret;
}
