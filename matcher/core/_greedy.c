/*
 * Two members' greedy solve in one pass (lowfloor), included by _kernel.c:
 *
 *   greedy_pairs(x, y, n_x, n_y, out) -> pairs chosen, -1 (a pair given twice) or -2 (unchecked)
 *
 * x[k] and y[k] (uint32) are candidate k's rows of the first and of the second member, best
 * first; out[k] (uint8) is set to 1 where candidate k joins its two records, which happens
 * exactly when neither is joined yet. With two members and every pair given once this is
 * anonlink's greedy solver (core/solve.py says why); a pair given twice can grow a group past
 * two there, so the pass also checks, on a bitmap of the n_x * n_y pairs, that none is: -1 when
 * one is (out then undefined), -2 when the bitmap would pass BM_GREEDY_MAX_BITS (out filled,
 * the caller checks that no pair is given twice).
 */

#define BM_GREEDY_MAX_BITS ((uint64_t)1 << 30) /* 128 MiB */

static PyObject *py_greedy_pairs(PyObject *self, PyObject *args) {
    Py_buffer vx, vy, vo;
    unsigned long long n_x, n_y;
    if (!PyArg_ParseTuple(args, "y*y*KKw*", &vx, &vy, &n_x, &n_y, &vo)) return NULL;
    PyObject *ret = NULL;
    size_t n = (size_t)vx.len / 4;
    if ((size_t)vx.len % 4 || (size_t)vy.len != n * 4 || (size_t)vo.len != n ||
        (uintptr_t)vx.buf % 4 || (uintptr_t)vy.buf % 4) {
        PyErr_SetString(PyExc_ValueError, "greedy_pairs: rows uint32 aligned, out uint8, all as long");
        goto done;
    }
    const uint32_t *x = vx.buf, *y = vy.buf;
    for (size_t k = 0; k < n; k++) {
        if (x[k] >= n_x || y[k] >= n_y) {
            PyErr_SetString(PyExc_ValueError, "greedy_pairs: a row past n_x or n_y");
            goto done;
        }
    }
    uint64_t cells = (uint64_t)n_x * (uint64_t)n_y;
    int check = n_x && n_y && cells / n_x == n_y && cells <= BM_GREEDY_MAX_BITS;
    uint8_t *used_x = calloc(n_x ? n_x : 1, 1), *used_y = calloc(n_y ? n_y : 1, 1);
    uint8_t *seen = check ? calloc((size_t)(cells / 8 + 1), 1) : NULL;
    if (!used_x || !used_y || (check && !seen)) {
        free(used_x); free(used_y); free(seen);
        PyErr_NoMemory();
        goto done;
    }
    long long chosen = 0;
    Py_BEGIN_ALLOW_THREADS
    uint8_t *out = vo.buf;
    for (size_t k = 0; k < n; k++) {
        uint32_t a = x[k], b = y[k];
        if (check) {
            uint64_t bit = (uint64_t)a * n_y + b;
            if (seen[bit >> 3] & (1u << (bit & 7))) {
                chosen = -1;
                break;
            }
            seen[bit >> 3] |= (uint8_t)(1u << (bit & 7));
        }
        out[k] = !used_x[a] && !used_y[b];
        if (out[k]) {
            used_x[a] = used_y[b] = 1;
            chosen++;
        }
    }
    Py_END_ALLOW_THREADS
    free(used_x); free(used_y); free(seen);
    ret = PyLong_FromLongLong(check || chosen < 0 ? chosen : -2);
done:
    PyBuffer_Release(&vx);
    PyBuffer_Release(&vy);
    PyBuffer_Release(&vo);
    return ret;
}
