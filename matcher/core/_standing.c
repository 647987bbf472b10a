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
