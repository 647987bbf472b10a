/*
 * A query against a standing partner's products (matcher/core/standingrows.py, core/standing.py,
 * core/standingquery.py), included by _kernel.c:
 *
 *   rows_times(vecs, rows, mat, itemsize, out, mat2=None, path="auto") -> path used
 *       out[i][n] = sum_j vecs[i][j] * (mat[n][j] (+ mat2[n][j])) mod 2^32
 *
 * `vecs`: `rows` uint32 rows of L; `mat`: N rows of L, uint16 (itemsize 2) or uint32 (4), and
 * `mat2` (uint32 only) the same shape, added to `mat` element by element (mod 2^32) as it is
 * read (C's M_B from both servers' shares, never stored whole); `out`: rows x N uint32. All
 * C-contiguous, little-endian. Every sum is unsigned 32-bit arithmetic, so the result is
 * numpy's `np.einsum("nj,ij->in", mat, vecs)` on uint32 exactly, whatever the path, and its
 * low k bits are the same product mod 2^k (the uint16 case's D_B, mod 2^16).
 *
 * Memory-bound: each record's row is read once from memory and then, from L1, once per row of
 * `vecs` (a query's few). Paths: "avx2" (VPMULLD, 8 lanes) where the CPU has AVX2, chosen at
 * run time, and "generic" (the same C, whatever the compiler makes of it) everywhere.
 */

#define BM_ROWS_TIMES_BODY(mat_t, add2)                                                      \
    for (size_t n = 0; n < records; n++) {                                                   \
        const mat_t *m = (const mat_t *)mat + n * width;                                     \
        const uint32_t *m2 = add2 ? (const uint32_t *)mat2 + n * width : NULL;               \
        if (add2) {                                                                          \
            for (size_t j = 0; j < width; j++) row[j] = (uint32_t)m[j] + m2[j];              \
        }                                                                                    \
        size_t i = 0;                                                                        \
        for (; i + 2 <= rows; i += 2) { /* two rows a pass: the record's row read once */    \
            const uint32_t *v = vecs + i * width, *u = v + width;                            \
            uint32_t acc = 0, acc2 = 0;                                                      \
            if (add2) {                                                                      \
                for (size_t j = 0; j < width; j++) {                                         \
                    acc += v[j] * row[j];                                                    \
                    acc2 += u[j] * row[j];                                                   \
                }                                                                            \
            } else {                                                                         \
                for (size_t j = 0; j < width; j++) {                                         \
                    uint32_t x = (uint32_t)m[j];                                             \
                    acc += v[j] * x;                                                         \
                    acc2 += u[j] * x;                                                        \
                }                                                                            \
            }                                                                                \
            out[i * records + n] = acc;                                                      \
            out[(i + 1) * records + n] = acc2;                                               \
        }                                                                                    \
        for (; i < rows; i++) {                                                              \
            const uint32_t *v = vecs + i * width;                                            \
            uint32_t acc = 0;                                                                \
            if (add2) {                                                                      \
                for (size_t j = 0; j < width; j++) acc += v[j] * row[j];                     \
            } else {                                                                         \
                for (size_t j = 0; j < width; j++) acc += v[j] * (uint32_t)m[j];             \
            }                                                                                \
            out[i * records + n] = acc;                                                      \
        }                                                                                    \
    }

/* One function a matrix type (and with mat2 or not); `row` is scratch of `width` uint32. */
#define BM_ROWS_TIMES_FN(fname, attrs, mat_t, add2)                                          \
    attrs static void fname(const void *mat, const void *mat2, const uint32_t *vecs,         \
                            size_t rows, size_t records, size_t width, uint32_t *out,        \
                            uint32_t *row) {                                                 \
        (void)mat2;                                                                          \
        (void)row;                                                                           \
        BM_ROWS_TIMES_BODY(mat_t, add2)                                                      \
    }

#define BM_ROWS_TIMES(name, attrs)                                                           \
    BM_ROWS_TIMES_FN(name##_u16, attrs, uint16_t, 0)                                         \
    BM_ROWS_TIMES_FN(name##_u32, attrs, uint32_t, 0)                                         \
    BM_ROWS_TIMES_FN(name##_sum, attrs, uint32_t, 1)

typedef void (*rows_times_fn)(const void *, const void *, const uint32_t *, size_t, size_t,
                              size_t, uint32_t *, uint32_t *);

BM_ROWS_TIMES(rows_times_generic, )
#if BM_X86
BM_ROWS_TIMES(rows_times_avx2, __attribute__((target("avx2"))))
#endif

static int have_avx2(void) {
#if BM_X86
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2");
#else
    return 0;
#endif
}

static PyObject *py_rows_times(PyObject *self, PyObject *args) {
    Py_buffer vv, vm, vo, v2 = {0};
    Py_ssize_t rows, itemsize;
    PyObject *mat2 = Py_None;
    const char *path = "auto";
    if (!PyArg_ParseTuple(args, "y*ny*nw*|Os", &vv, &rows, &vm, &itemsize, &vo, &mat2, &path))
        return NULL;
    PyObject *ret = NULL;
    int have2 = mat2 != Py_None;
    if (have2 && PyObject_GetBuffer(mat2, &v2, PyBUF_SIMPLE) < 0) {
        have2 = 0;
        goto done;
    }
    if (rows <= 0 || vv.len % (4 * rows) || (itemsize != 2 && itemsize != 4) ||
        (have2 && itemsize != 4)) {
        PyErr_SetString(PyExc_ValueError, "rows_times: rows > 0, itemsize 2 or 4 (4 with mat2)");
        goto done;
    }
    size_t width = (size_t)(vv.len / (4 * rows));
    if (width == 0 || vm.len % (Py_ssize_t)(width * itemsize) ||
        (have2 && v2.len != vm.len)) {
        PyErr_SetString(PyExc_ValueError, "rows_times: a matrix whose rows are not the vectors'");
        goto done;
    }
    size_t records = (size_t)vm.len / (width * (size_t)itemsize);
    if ((size_t)vo.len != (size_t)rows * records * 4 || (uintptr_t)vo.buf % 4 ||
        (uintptr_t)vv.buf % 4 || (uintptr_t)vm.buf % (size_t)itemsize ||
        (have2 && (uintptr_t)v2.buf % 4)) {
        PyErr_SetString(PyExc_ValueError, "rows_times: out is rows x N aligned uint32");
        goto done;
    }
    int avx2 = have_avx2();
    if (strcmp(path, "auto") && strcmp(path, "generic") && strcmp(path, "avx2")) {
        PyErr_SetString(PyExc_ValueError, "rows_times: path auto, avx2 or generic");
        goto done;
    }
    if (!strcmp(path, "avx2") && !avx2) {
        PyErr_SetString(PyExc_ValueError, "rows_times: this CPU has no AVX2");
        goto done;
    }
    int use_avx2 = avx2 && strcmp(path, "generic");
    rows_times_fn fn;
#if BM_X86
    if (use_avx2)
        fn = have2 ? rows_times_avx2_sum : itemsize == 2 ? rows_times_avx2_u16 : rows_times_avx2_u32;
    else
#endif
        fn = have2 ? rows_times_generic_sum
                   : itemsize == 2 ? rows_times_generic_u16 : rows_times_generic_u32;
    uint32_t *row = have2 ? malloc(width * 4) : NULL;
    if (have2 && !row) {
        PyErr_NoMemory();
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    fn(vm.buf, have2 ? v2.buf : NULL, vv.buf, (size_t)rows, records, width, vo.buf, row);
    Py_END_ALLOW_THREADS
    free(row);
    ret = PyUnicode_FromString(use_avx2 ? "avx2" : "generic");
done:
    PyBuffer_Release(&vv);
    PyBuffer_Release(&vm);
    PyBuffer_Release(&vo);
    if (have2) PyBuffer_Release(&v2);
    return ret;
}

/*
 * A daBit conversion's per-bit arithmetic (core/ring64.py `Party.first`, `Party.converted`,
 * `deal`), fused: one pass over the bits where numpy makes a dozen, each with a temporary a
 * bit. The same unsigned arithmetic as ring64's numpy (its fallback), mod 2^64 (`width` 8) or
 * mod 2^32 (`width` 4: a partner's and a query's CLK bits, core/standing.py `bits_size`), so
 * the messages and shares are the same bytes. Below, "words" are `width` bytes each.
 *
 *   dabit_first(bits, word, t, spare, role, masked, pad, width=8)
 *       bits: n uint8 (the low bit read; the daBit's bit, word & 1, written into bit 1 for
 *       `dabit_converted`); word: n words (x or y, low bit the daBit's);
 *       t: the checks' t (words, role 0; role 1 passes word); spare: x' or y' (words);
 *       masked (out): (n + 7) / 8 bytes, (bits ^ word) & 1 packed little; pad (out): n
 *       words LE (any alignment), role 0 t (word & 1) - x', role 1 (word & 1) - y'.
 *   dabit_converted(bits, p, q, t, spare, theirs_pad, theirs_masked, role, out, check, width=8)
 *       bits: `dabit_first`'s (bit 0 this server's, bit 1 its daBit's bit, x & 1 or y & 1);
 *       u = bits ^ bit ^ theirs_masked (low bits); r = bit - 2 p;
 *       out = (1 - 2 u) r (+ u, role 0); check = t p - q - pad (role 0 x', role 1 bit),
 *       negated (0 - check) at role 1. theirs_pad: n words LE (any alignment); spare: x'
 *       (role 0; role 1 passes p).
 *   dabit_deal(x, y, p1, x_, y_, q1, out_p, out_q, width=8)
 *       out_p = (x & 1) (y & 1) - p1, out_q = x_ y_ - q1 (n words LE each, any alignment).
 */

static int bm_buf_words(Py_buffer *b, Py_ssize_t n, int width, const char *what) {
    if (b->len != width * n || (uintptr_t)b->buf % (uintptr_t)width) {
        PyErr_Format(PyExc_ValueError, "dabit: %s is not %zd aligned %d-byte words", what, n,
                     width);
        return 0;
    }
    return 1;
}

static int bm_width_ok(int width) {
    if (width != 4 && width != 8) {
        PyErr_SetString(PyExc_ValueError, "dabit: words of 4 or 8 bytes");
        return 0;
    }
    return 1;
}

/* Every buffer a call took released; `ret` returned. */
static PyObject *bm_released(PyObject *ret, Py_buffer *bufs[], size_t k) {
    for (size_t i = 0; i < k; i++) PyBuffer_Release(bufs[i]);
    return ret;
}

#define BM_DABIT_FIRST(T)                                                                    \
    for (Py_ssize_t i = 0; i < n; i++) {                                                     \
        T bit = ((const T *)vw.buf)[i] & 1u;                                                 \
        m[i >> 3] |= (uint8_t)(((b[i] ^ bit) & 1u) << (i & 7));                              \
        b[i] = (uint8_t)((b[i] & 1u) | (bit << 1));                                          \
        T v = (T)((role == 0 ? (T)(((const T *)vt.buf)[i] * bit) : bit) -                    \
                  ((const T *)vs.buf)[i]);                                                   \
        memcpy(pad + sizeof(T) * i, &v, sizeof(T));                                          \
    }

static PyObject *py_dabit_first(PyObject *self, PyObject *args) {
    Py_buffer vb, vw, vt, vs, vm, vp;
    int role, width = 8;
    if (!PyArg_ParseTuple(args, "w*y*y*y*iw*w*|i", &vb, &vw, &vt, &vs, &role, &vm, &vp, &width))
        return NULL;
    PyObject *ret = NULL;
    Py_ssize_t n = vb.len;
    if (!bm_width_ok(width) || (role != 0 && role != 1) ||
        !bm_buf_words(&vw, n, width, "word") || !bm_buf_words(&vt, n, width, "t") ||
        !bm_buf_words(&vs, n, width, "spare"))
        goto done;
    if (vm.len != (n + 7) / 8 || vp.len != width * n) {
        PyErr_SetString(PyExc_ValueError, "dabit: masked is not the bits packed");
        goto done;
    }
    uint8_t *b = vb.buf;
    uint8_t *m = vm.buf;
    uint8_t *pad = vp.buf;
    Py_BEGIN_ALLOW_THREADS
    memset(m, 0, (size_t)vm.len);
    if (width == 8) {
        BM_DABIT_FIRST(uint64_t)
    } else {
        BM_DABIT_FIRST(uint32_t)
    }
    Py_END_ALLOW_THREADS
    ret = Py_NewRef(Py_None);
done:
    return bm_released(ret, (Py_buffer *[]){&vb, &vw, &vt, &vs, &vm, &vp}, 6);
}

#define BM_DABIT_CONVERTED(T)                                                                \
    {                                                                                        \
        const T *p = vp.buf, *q = vq.buf, *t = vt.buf, *s = vs.buf;                          \
        T *out = vo.buf, *check = vc.buf;                                                    \
        for (Py_ssize_t i = 0; i < n; i++) {                                                 \
            T bit = (T)((b[i] >> 1) & 1u), pad;                                              \
            memcpy(&pad, pb + sizeof(T) * i, sizeof(T)); /* little-endian (BM_X86 ...) */    \
            T u = (T)((b[i] ^ bit ^ (T)(m[i >> 3] >> (i & 7))) & 1u);                        \
            T r = (T)(bit - (T)(2u * p[i]));                                                 \
            out[i] = (T)((T)((T)1u - (T)(2u * u)) * r + (role == 0 ? u : (T)0u));            \
            T c = (T)((T)(t[i] * p[i]) - q[i] - (T)(pad * (role == 0 ? s[i] : bit)));        \
            check[i] = role == 0 ? c : (T)((T)0u - c);                                       \
        }                                                                                    \
    }

static PyObject *py_dabit_converted(PyObject *self, PyObject *args) {
    Py_buffer vb, vp, vq, vt, vs, vpad, vm, vo, vc;
    int role, width = 8;
    if (!PyArg_ParseTuple(args, "y*y*y*y*y*y*y*iw*w*|i", &vb, &vp, &vq, &vt, &vs, &vpad, &vm,
                          &role, &vo, &vc, &width))
        return NULL;
    PyObject *ret = NULL;
    Py_ssize_t n = vb.len;
    if (!bm_width_ok(width) || (role != 0 && role != 1) || !bm_buf_words(&vp, n, width, "p") ||
        !bm_buf_words(&vq, n, width, "q") || !bm_buf_words(&vt, n, width, "t") ||
        !bm_buf_words(&vs, n, width, "spare") || !bm_buf_words(&vo, n, width, "out") ||
        !bm_buf_words(&vc, n, width, "check"))
        goto done;
    if (vpad.len != width * n || vm.len != (n + 7) / 8) {
        PyErr_SetString(PyExc_ValueError, "dabit: the other server's message does not fit");
        goto done;
    }
    const uint8_t *b = vb.buf, *m = vm.buf, *pb = vpad.buf;
    Py_BEGIN_ALLOW_THREADS
    if (width == 8)
        BM_DABIT_CONVERTED(uint64_t)
    else
        BM_DABIT_CONVERTED(uint32_t)
    Py_END_ALLOW_THREADS
    ret = Py_NewRef(Py_None);
done:
    return bm_released(ret, (Py_buffer *[]){&vb, &vp, &vq, &vt, &vs, &vpad, &vm, &vo, &vc}, 9);
}

#define BM_DABIT_DEAL(T)                                                                     \
    {                                                                                        \
        const T *x = vx.buf, *y = vy.buf, *p = vp.buf, *x_ = vx_.buf, *y_ = vy_.buf,         \
                *q = vq.buf;                                                                 \
        for (Py_ssize_t i = 0; i < n; i++) {                                                 \
            T e = (T)((T)((x[i] & 1u) * (y[i] & 1u)) - p[i]);                                \
            T f = (T)((T)(x_[i] * y_[i]) - q[i]);                                            \
            memcpy(o + sizeof(T) * i, &e, sizeof(T));                                        \
            memcpy(o2 + sizeof(T) * i, &f, sizeof(T));                                       \
        }                                                                                    \
    }

static PyObject *py_dabit_deal(PyObject *self, PyObject *args) {
    Py_buffer vx, vy, vp, vx_, vy_, vq, vo, vo2;
    int width = 8;
    if (!PyArg_ParseTuple(args, "y*y*y*y*y*y*w*w*|i", &vx, &vy, &vp, &vx_, &vy_, &vq, &vo, &vo2,
                          &width))
        return NULL;
    PyObject *ret = NULL;
    Py_ssize_t n = vx.len / (width == 4 ? 4 : 8);
    if (!bm_width_ok(width) || !bm_buf_words(&vx, n, width, "x") ||
        !bm_buf_words(&vy, n, width, "y") || !bm_buf_words(&vp, n, width, "p") ||
        !bm_buf_words(&vx_, n, width, "x'") || !bm_buf_words(&vy_, n, width, "y'") ||
        !bm_buf_words(&vq, n, width, "q"))
        goto done;
    if (vo.len != width * n || vo2.len != width * n) {
        PyErr_SetString(PyExc_ValueError, "dabit: out is a word a daBit");
        goto done;
    }
    uint8_t *o = vo.buf, *o2 = vo2.buf;
    Py_BEGIN_ALLOW_THREADS
    if (width == 8)
        BM_DABIT_DEAL(uint64_t)
    else
        BM_DABIT_DEAL(uint32_t)
    Py_END_ALLOW_THREADS
    ret = Py_NewRef(Py_None);
done:
    return bm_released(ret, (Py_buffer *[]){&vx, &vy, &vp, &vx_, &vy_, &vq, &vo, &vo2}, 8);
}
