/*
 * Per-pair cost of the two-server step of docs/privacy-design.md option (b), in C.
 *
 *   cc -O2 -march=native -o /tmp/twoserver_perm benchmarks/twoserver_perm.c
 *   /tmp/twoserver_perm [pairs] [records]
 *
 * (benchmarks/twoserver_cost.py builds and runs it, and projects the three-party cost.)
 *
 * For a candidate pair (a, b) each server S (S1 holding shares x1, S2 holding x2 = x ^ x1)
 * computes d_S = x_S[a] ^ x_S[b] (two 128-byte shares XORed) and applies a permutation pi of
 * the 1,024 bit positions derived from the S1-S2 key and the pair's ids, and sends pi(d_S) to
 * the combiner C. C XORs the two messages and counts bits: the Hamming distance of x[a] and
 * x[b], and so their Dice, and nothing about where they differ.
 *
 * Permutations measured (the PRF is ChaCha, keyed by the S1-S2 key, nonce = the pair's ids):
 *   fy20  Fisher-Yates over the 1,024 bits with ChaCha20 (32-bit draws, multiply-shift:
 *         bias <= 2^-22 per draw): a uniform permutation (the design's choice).
 *   fy8   the same with ChaCha8 (reduced rounds; still no known distinguisher).
 *   fyaes Fisher-Yates with AES-128-CTR (AES-NI) as the PRF and 16-bit draws made unbiased
 *         by Lemire's multiply-and-reject: a uniform permutation, the PRF most servers have
 *         in hardware.
 *   benes a Benes network (19 stages of 512 keyed conditional swaps, delta swaps on 64-bit
 *         words) with ChaCha8 switch bits: 1,216 bytes of PRF output a pair and word
 *         operations only, but random switch settings do NOT give a uniform permutation
 *         (a cheaper candidate whose leak would need its own study).
 *
 * Printed per variant: microseconds per pair for one server (XOR + permute, what S1 and S2
 * each do per pair), pairs per second per core, and C's per-pair cost (XOR two messages,
 * popcount, Dice). Each variant is checked: C's Hamming distance equals the plaintext one.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <wmmintrin.h>

#define WORDS 16 /* 1,024 bits */

static inline uint32_t rotl32(uint32_t x, int n) { return (x << n) | (x >> (32 - n)); }

#define QR(a, b, c, d)                                                   \
    a += b; d ^= a; d = rotl32(d, 16); c += d; b ^= c; b = rotl32(b, 12); \
    a += b; d ^= a; d = rotl32(d, 8);  c += d; b ^= c; b = rotl32(b, 7)

/* One ChaCha block: key (8 words), counter, nonce (3 words) -> 16 words. */
static void chacha_block(const uint32_t key[8], uint32_t counter, const uint32_t nonce[3],
                         int rounds, uint32_t out[16]) {
    uint32_t s[16] = {0x61707865, 0x3320646e, 0x79622d32, 0x6b206574,
                      key[0], key[1], key[2], key[3], key[4], key[5], key[6], key[7],
                      counter, nonce[0], nonce[1], nonce[2]};
    uint32_t x[16];
    memcpy(x, s, sizeof x);
    for (int i = 0; i < rounds; i += 2) {
        QR(x[0], x[4], x[8], x[12]); QR(x[1], x[5], x[9], x[13]);
        QR(x[2], x[6], x[10], x[14]); QR(x[3], x[7], x[11], x[15]);
        QR(x[0], x[5], x[10], x[15]); QR(x[1], x[6], x[11], x[12]);
        QR(x[2], x[7], x[8], x[13]); QR(x[3], x[4], x[9], x[14]);
    }
    for (int i = 0; i < 16; i++) out[i] = x[i] + s[i];
}

typedef struct {
    const uint32_t *key;
    uint32_t nonce[3];
    uint32_t counter, buf[16];
    int used, rounds;
} prf_t;

static void prf_init(prf_t *p, const uint32_t key[8], uint32_t a, uint32_t b, int rounds) {
    p->key = key;
    p->nonce[0] = a; p->nonce[1] = b; p->nonce[2] = 0x62736d31; /* "bsm1" */
    p->counter = 0; p->used = 16; p->rounds = rounds;
}

static inline uint32_t prf_next(prf_t *p) {
    if (p->used == 16) {
        chacha_block(p->key, p->counter++, p->nonce, p->rounds, p->buf);
        p->used = 0;
    }
    return p->buf[p->used++];
}

/* Fisher-Yates on the bits of d (in place): bit k swapped with a uniform bit j <= k. */
static void permute_fy(uint64_t d[WORDS], const uint32_t key[8], uint32_t a, uint32_t b,
                       int rounds) {
    uint8_t bits[1024];
    for (int w = 0; w < WORDS; w++)
        for (int k = 0; k < 64; k++) bits[64 * w + k] = (d[w] >> k) & 1;
    prf_t p;
    prf_init(&p, key, a, b, rounds);
    for (uint32_t k = 1023; k > 0; k--) {
        uint32_t j = (uint32_t)(((uint64_t)prf_next(&p) * (k + 1)) >> 32);
        uint8_t t = bits[k]; bits[k] = bits[j]; bits[j] = t;
    }
    for (int w = 0; w < WORDS; w++) {
        uint64_t x = 0;
        for (int k = 0; k < 64; k++) x |= (uint64_t)bits[64 * w + k] << k;
        d[w] = x;
    }
}

/* AES-128 in counter mode (AES-NI) as the PRF: round keys expanded once from the S1-S2 key,
 * the block = (pair ids, counter). */
#define EXPAND(k, rcon)                                                        \
    do {                                                                       \
        __m128i t = _mm_aeskeygenassist_si128(k, rcon);                        \
        t = _mm_shuffle_epi32(t, 0xff);                                        \
        k = _mm_xor_si128(k, _mm_slli_si128(k, 4));                            \
        k = _mm_xor_si128(k, _mm_slli_si128(k, 4));                            \
        k = _mm_xor_si128(k, _mm_slli_si128(k, 4));                            \
        k = _mm_xor_si128(k, t);                                               \
    } while (0)

static void aes_expand(const uint32_t key[8], __m128i rk[11]) {
    __m128i k = _mm_loadu_si128((const __m128i *)key);
    rk[0] = k;
    EXPAND(k, 0x01); rk[1] = k; EXPAND(k, 0x02); rk[2] = k; EXPAND(k, 0x04); rk[3] = k;
    EXPAND(k, 0x08); rk[4] = k; EXPAND(k, 0x10); rk[5] = k; EXPAND(k, 0x20); rk[6] = k;
    EXPAND(k, 0x40); rk[7] = k; EXPAND(k, 0x80); rk[8] = k; EXPAND(k, 0x1b); rk[9] = k;
    EXPAND(k, 0x36); rk[10] = k;
}

/* 16 AES blocks (256 bytes) of the pair's stream from block `ctr` on. */
static void aes_ctr(const __m128i rk[11], uint32_t a, uint32_t b, uint32_t ctr, uint16_t *out) {
    __m128i x[16];
    for (int i = 0; i < 16; i++) x[i] = _mm_xor_si128(_mm_set_epi32(0, ctr + i, b, a), rk[0]);
    for (int r = 1; r < 10; r++)
        for (int i = 0; i < 16; i++) x[i] = _mm_aesenc_si128(x[i], rk[r]);
    for (int i = 0; i < 16; i++) _mm_storeu_si128((__m128i *)out + i, _mm_aesenclast_si128(x[i], rk[10]));
}

/* Fisher-Yates with AES-CTR 16-bit draws, unbiased (Lemire's multiply with rejection). */
static void permute_fy_aes(uint64_t d[WORDS], const __m128i rk[11], uint32_t a, uint32_t b) {
    uint8_t bits[1024];
    for (int w = 0; w < WORDS; w++)
        for (int k = 0; k < 64; k++) bits[64 * w + k] = (d[w] >> k) & 1;
    uint16_t buf[128];
    int used = 128;
    uint32_t ctr = 0;
    for (uint32_t k = 1023; k > 0; k--) {
        uint32_t range = k + 1, m, low;
        do {
            if (used == 128) { aes_ctr(rk, a, b, ctr, buf); ctr += 16; used = 0; }
            m = (uint32_t)buf[used++] * range;
            low = m & 0xffff;
        } while (low < range && low < (65536u - range) % range);
        uint32_t j = m >> 16;
        uint8_t t = bits[k]; bits[k] = bits[j]; bits[j] = t;
    }
    for (int w = 0; w < WORDS; w++) {
        uint64_t x = 0;
        for (int k = 0; k < 64; k++) x |= (uint64_t)bits[64 * w + k] << k;
        d[w] = x;
    }
}

/* Conditional swap of the index bit `level` (0..9) under 512 switch bits (8 words). */
static inline void benes_stage(uint64_t d[WORDS], int level, const uint64_t sw[8]) {
    static const uint64_t low[6] = {0x5555555555555555ull, 0x3333333333333333ull,
                                    0x0F0F0F0F0F0F0F0Full, 0x00FF00FF00FF00FFull,
                                    0x0000FFFF0000FFFFull, 0x00000000FFFFFFFFull};
    if (level < 6) {
        int s = 1 << level;
        for (int w = 0; w < WORDS; w++) {
            /* switch bits: 32 of each 64 are used (the low element of each swapped pair) */
            uint64_t m = low[level] & (w & 1 ? sw[w >> 1] >> 1 : sw[w >> 1]);
            uint64_t t = ((d[w] >> s) ^ d[w]) & m;
            d[w] ^= t ^ (t << s);
        }
    } else {
        int s = 1 << (level - 6), k = 0;
        for (int w = 0; w < WORDS; w++) {
            if (w & s) continue;
            uint64_t t = (d[w] ^ d[w | s]) & sw[k++];
            d[w] ^= t; d[w | s] ^= t;
        }
    }
}

static void permute_benes(uint64_t d[WORDS], const uint32_t key[8], uint32_t a, uint32_t b) {
    prf_t p;
    prf_init(&p, key, a, b, 8);
    for (int stage = 0; stage < 19; stage++) {
        int level = stage < 10 ? stage : 18 - stage;
        uint64_t sw[8];
        for (int k = 0; k < 8; k++) sw[k] = (uint64_t)prf_next(&p) << 32 | prf_next(&p);
        benes_stage(d, level, sw);
    }
}

static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

int main(int argc, char **argv) {
    long pairs = argc > 1 ? atol(argv[1]) : 200000;
    long n = argc > 2 ? atol(argv[2]) : 10000;
    uint64_t seed = 12345;
    uint64_t *x = malloc(n * WORDS * 8), *x1 = malloc(n * WORDS * 8), *x2 = malloc(n * WORDS * 8);
    uint32_t *ia = malloc(pairs * 4), *ib = malloc(pairs * 4);
    uint64_t *m1 = malloc(pairs * WORDS * 8), *m2 = malloc(pairs * WORDS * 8);
    uint32_t key[8];
    for (int k = 0; k < 8; k++) key[k] = (uint32_t)splitmix(&seed);
    for (long i = 0; i < n * WORDS; i++) {
        /* about 55% of bits set, as real CLKs */
        x[i] = splitmix(&seed) | (splitmix(&seed) & splitmix(&seed) & splitmix(&seed) & 0x5555555555555555ull);
        x1[i] = splitmix(&seed);
        x2[i] = x[i] ^ x1[i];
    }
    for (long k = 0; k < pairs; k++) {
        ia[k] = splitmix(&seed) % n;
        ib[k] = splitmix(&seed) % n;
    }
    __m128i rk[11];
    aes_expand(key, rk);
    const char *names[4] = {"fy20", "fy8", "benes", "fyaes"};
    for (int v = 0; v < 4; v++) {
        for (int server = 0; server < 2; server++) {
            const uint64_t *sh = server ? x2 : x1;
            uint64_t *out = server ? m2 : m1;
            double t0 = now();
            for (long k = 0; k < pairs; k++) {
                uint64_t *d = out + k * WORDS;
                const uint64_t *xa = sh + (size_t)ia[k] * WORDS, *xb = sh + (size_t)ib[k] * WORDS;
                for (int w = 0; w < WORDS; w++) d[w] = xa[w] ^ xb[w];
                if (v == 0) permute_fy(d, key, ia[k], ib[k], 20);
                else if (v == 1) permute_fy(d, key, ia[k], ib[k], 8);
                else if (v == 2) permute_benes(d, key, ia[k], ib[k]);
                else permute_fy_aes(d, rk, ia[k], ib[k]);
            }
            double dt = now() - t0;
            if (server == 0)
                printf("%s server_us_per_pair %.3f server_pairs_per_s_core %.0f\n", names[v],
                       1e6 * dt / pairs, pairs / dt);
        }
        long bad = 0;
        double sum = 0, t0 = now();
        for (long k = 0; k < pairs; k++) {
            int h = 0, pa = 0, pb = 0;
            for (int w = 0; w < WORDS; w++) h += __builtin_popcountll(m1[k * WORDS + w] ^ m2[k * WORDS + w]);
            for (int w = 0; w < WORDS; w++) {
                pa += __builtin_popcountll(x[(size_t)ia[k] * WORDS + w]);
                pb += __builtin_popcountll(x[(size_t)ib[k] * WORDS + w]);
            }
            sum += 1.0 - (double)h / (pa + pb);
            int plain = 0;
            for (int w = 0; w < WORDS; w++)
                plain += __builtin_popcountll(x[(size_t)ia[k] * WORDS + w] ^ x[(size_t)ib[k] * WORDS + w]);
            bad += plain != h;
        }
        double dt = now() - t0;
        printf("%s combiner_us_per_pair %.3f (with the plaintext check) mismatches %ld checksum %.3f\n",
               names[v], 1e6 * dt / pairs, bad, sum);
    }
    return 0;
}
