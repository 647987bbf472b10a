/*
 * The two servers' per-pair messages of secret-shared Dice (docs/privacy-design.md, option b),
 * included by _kernel.c:
 *
 *   pair_messages(shares_a, shares_b, width, rows_a, rows_b, dset_a, dset_b, key)
 *       -> bytes, or None where the CPU has no AES instructions
 *
 * For each candidate pair k, (shares_a[rows_a[k]] ^ shares_b[rows_b[k]]) with its 8 * width
 * bits permuted by the pair's permutation: Fisher-Yates (bit k swapped with bit j, j uniform in
 * [0, k], k from the last bit down) driven by AES-128 in counter mode under `key` (16 bytes,
 * the two servers' shared key), the stream's counter block being the pair's record numbers
 * ((dset << 32) | row, 6 bytes big-endian each) and a 4-byte big-endian block counter from 0,
 * its draws 16-bit little-endian words made unbiased by Lemire's multiply-and-reject. Bit p of
 * a share is bit p % 8 of its byte p / 8. matcher/core/sharing.py `pair_permutation` is the
 * same permutation in Python (AES-CTR from `cryptography`); tests/test_sharing.py checks they
 * agree. About 3.4 us a pair at 1,024 bits (benchmarks/twoserver_cost.py).
 */

#define BM_PERM_MAX_BITS 65536 /* 16-bit draws */

#if BM_X86
#include <wmmintrin.h>

#define BM_EXPAND(k, rcon)                                                                   \
    do {                                                                                     \
        __m128i t_ = _mm_aeskeygenassist_si128(k, rcon);                                     \
        t_ = _mm_shuffle_epi32(t_, 0xff);                                                    \
        k = _mm_xor_si128(k, _mm_slli_si128(k, 4));                                          \
        k = _mm_xor_si128(k, _mm_slli_si128(k, 4));                                          \
        k = _mm_xor_si128(k, _mm_slli_si128(k, 4));                                          \
        k = _mm_xor_si128(k, t_);                                                            \
    } while (0)

__attribute__((target("aes,sse2"))) static void aes128_expand(const uint8_t key[16],
                                                               __m128i rk[11]) {
    __m128i k = _mm_loadu_si128((const __m128i *)key);
    rk[0] = k;
    BM_EXPAND(k, 0x01); rk[1] = k; BM_EXPAND(k, 0x02); rk[2] = k; BM_EXPAND(k, 0x04); rk[3] = k;
    BM_EXPAND(k, 0x08); rk[4] = k; BM_EXPAND(k, 0x10); rk[5] = k; BM_EXPAND(k, 0x20); rk[6] = k;
    BM_EXPAND(k, 0x40); rk[7] = k; BM_EXPAND(k, 0x80); rk[8] = k; BM_EXPAND(k, 0x1b); rk[9] = k;
    BM_EXPAND(k, 0x36); rk[10] = k;
}

/* 16 blocks (256 bytes) of the pair's stream from block `ctr` on. */
__attribute__((target("aes,sse2"))) static void aes128_ctr16(const __m128i rk[11],
                                                              const uint8_t prefix[12],
                                                              uint32_t ctr, uint8_t *out) {
    __m128i x[16];
    uint8_t block[16];
    memcpy(block, prefix, 12);
    for (int i = 0; i < 16; i++) {
        uint32_t c = ctr + (uint32_t)i;
        block[12] = (uint8_t)(c >> 24); block[13] = (uint8_t)(c >> 16);
        block[14] = (uint8_t)(c >> 8); block[15] = (uint8_t)c;
        x[i] = _mm_xor_si128(_mm_loadu_si128((const __m128i *)block), rk[0]);
    }
    for (int r = 1; r < 10; r++)
        for (int i = 0; i < 16; i++) x[i] = _mm_aesenc_si128(x[i], rk[r]);
    for (int i = 0; i < 16; i++)
        _mm_storeu_si128((__m128i *)(out + 16 * i), _mm_aesenclast_si128(x[i], rk[10]));
}

static void put48(uint8_t *p, uint64_t v) {
    for (int i = 5; i >= 0; i--) { p[i] = (uint8_t)v; v >>= 8; }
}

/* One pair: d (width bytes) permuted in place through `bits` (8 * width bytes of scratch). */
__attribute__((target("aes,sse2"))) static void permute_pair(uint8_t *d, Py_ssize_t width,
                                                              const __m128i rk[11],
                                                              uint64_t a, uint64_t b,
                                                              uint8_t *bits) {
    uint32_t n = (uint32_t)(8 * width);
    for (uint32_t p = 0; p < n; p++) bits[p] = (d[p >> 3] >> (p & 7)) & 1;
    uint8_t prefix[12], buf[256];
    put48(prefix, a);
    put48(prefix + 6, b);
    int used = 256;
    uint32_t ctr = 0;
    for (uint32_t k = n - 1; k > 0; k--) {
        uint32_t range = k + 1, m, low, x;
        uint32_t reject = (65536u - range) % range;
        do {
            if (used == 256) { aes128_ctr16(rk, prefix, ctr, buf); ctr += 16; used = 0; }
            x = (uint32_t)buf[used] | ((uint32_t)buf[used + 1] << 8);
            used += 2;
            m = x * range;
            low = m & 0xffff;
        } while (low < reject);
        uint32_t j = m >> 16;
        uint8_t t = bits[k]; bits[k] = bits[j]; bits[j] = t;
    }
    memset(d, 0, (size_t)width);
    for (uint32_t p = 0; p < n; p++) d[p >> 3] |= (uint8_t)(bits[p] << (p & 7));
}
#endif

static PyObject *py_pair_messages(PyObject *self, PyObject *args) {
    Py_buffer va, vb, vi, vj, vk;
    Py_ssize_t width;
    unsigned long long dset_a, dset_b;
    if (!PyArg_ParseTuple(args, "y*y*ny*y*KKy*", &va, &vb, &width, &vi, &vj, &dset_a, &dset_b,
                          &vk))
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t pairs = vi.len / 4;
    if (width <= 0 || 8 * width > BM_PERM_MAX_BITS || va.len % width || vb.len % width ||
        vi.len % 4 || vj.len != vi.len || vk.len != 16 || dset_a > 0xffff || dset_b > 0xffff) {
        PyErr_SetString(PyExc_ValueError,
                        "pair_messages: bad widths, row lists, member numbers or key");
        goto done;
    }
#if BM_X86
    if (!__builtin_cpu_supports("aes")) {
        result = Py_None;
        Py_INCREF(result);
        goto done;
    }
    const uint32_t *ia = vi.buf, *ib = vj.buf;
    Py_ssize_t na = va.len / width, nb = vb.len / width;
    for (Py_ssize_t k = 0; k < pairs; k++) {
        if ((Py_ssize_t)ia[k] >= na || (Py_ssize_t)ib[k] >= nb) {
            PyErr_SetString(PyExc_ValueError, "pair_messages: a row outside the shares");
            goto done;
        }
    }
    result = PyBytes_FromStringAndSize(NULL, pairs * width);
    if (!result) goto done;
    uint8_t *out = (uint8_t *)PyBytes_AS_STRING(result);
    uint8_t *bits = malloc((size_t)(8 * width));
    if (!bits) {
        Py_CLEAR(result);
        PyErr_NoMemory();
        goto done;
    }
    const uint8_t *sa = va.buf, *sb = vb.buf;
    Py_BEGIN_ALLOW_THREADS
    __m128i rk[11];
    aes128_expand(vk.buf, rk);
    for (Py_ssize_t k = 0; k < pairs; k++) {
        uint8_t *d = out + k * width;
        const uint8_t *x = sa + (Py_ssize_t)ia[k] * width, *y = sb + (Py_ssize_t)ib[k] * width;
        for (Py_ssize_t w = 0; w < width; w++) d[w] = x[w] ^ y[w];
        permute_pair(d, width, rk, (dset_a << 32) | ia[k], (dset_b << 32) | ib[k], bits);
    }
    Py_END_ALLOW_THREADS
    free(bits);
#else
    result = Py_None;
    Py_INCREF(result);
#endif
done:
    PyBuffer_Release(&va);
    PyBuffer_Release(&vb);
    PyBuffer_Release(&vi);
    PyBuffer_Release(&vj);
    PyBuffer_Release(&vk);
    return result;
}
