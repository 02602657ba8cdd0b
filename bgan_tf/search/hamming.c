/* The `ours_exact` kernel: exact top-k Hamming scan, compiled at first use by
   bgan_tf/search/hamming_c.py (which documents the build and the fallbacks). */
#include <stdint.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

/* Per-query state, all int32 in one scratch block of stride S = 2 + (M+1) + (M+1)*k:
   [0] tau (current admission threshold), [1] total (#kept with d <= tau),
   [2 .. 2+M] cnt[d], then buckets[d][0..k) of positions (scan order). */

static inline void accept(int32_t *st, int32_t *cnt, int32_t *bk, int k, int d, int32_t pos) {
    int tau = st[0];
    if (d > tau) return;
    if (d == tau && st[1] >= k) return;   /* k earlier items already rank ahead */
    bk[(int64_t)d * k + cnt[d]] = pos;
    cnt[d] += 1;
    st[1] += 1;
    /* Shrink tau while the buckets strictly below it already hold >= k items. */
    while (tau > 0 && st[1] - cnt[tau] >= k) {
        st[1] -= cnt[tau];
        cnt[tau] = 0;
        tau -= 1;
    }
    st[0] = tau;
}

static void init_state(int32_t *st, int M) {
    st[0] = M; st[1] = 0;
    memset(st + 2, 0, sizeof(int32_t) * (M + 1));
}

static void emit(const int32_t *st, int M, int k, int32_t *out_d, int64_t *out_i) {
    const int32_t *cnt = st + 2;
    const int32_t *bk = st + 2 + (M + 1);
    int o = 0;
    for (int d = 0; d <= st[0] && o < k; d++)
        for (int j = 0; j < cnt[d] && o < k; j++) { out_d[o] = d; out_i[o] = bk[(int64_t)d * k + j]; o++; }
    for (; o < k; o++) { out_d[o] = 0x7fffffff; out_i[o] = -1; }
}

/* ---------------------------------------------------------- portable scalar */
__attribute__((target("popcnt")))
static void scan_scalar(const uint8_t *db, int64_t n0, int64_t n1, int W, const uint8_t *q,
                        int32_t *st, int M, int k) {
    int32_t *cnt = st + 2, *bk = st + 2 + (M + 1);
    int nw = W / 8;
    for (int64_t i = n0; i < n1; i++) {
        const uint8_t *c = db + i * W;
        int d = 0;
        if (W == 4) {
            uint32_t a, b; memcpy(&a, c, 4); memcpy(&b, q, 4);
            d = __builtin_popcount(a ^ b);
        } else {
            for (int w = 0; w < nw; w++) {
                uint64_t a, b; memcpy(&a, c + 8 * w, 8); memcpy(&b, q + 8 * w, 8);
                d += __builtin_popcountll(a ^ b);
            }
        }
        if (d <= st[0]) accept(st, cnt, bk, k, d, (int32_t)i);
    }
}

#if defined(__x86_64__)
/* ------------------------------------------------ AVX-512 VPOPCNTDQ, W = 8 */
__attribute__((target("avx512f,avx512vpopcntdq,popcnt")))
static int64_t scan64_avx512(const uint8_t *db, int64_t n0, int64_t n1, const uint8_t *q,
                             int32_t *st, int M, int k) {
    int32_t *cnt = st + 2, *bk = st + 2 + (M + 1);
    uint64_t q64; memcpy(&q64, q, 8);
    const __m512i qv = _mm512_set1_epi64((long long)q64);
    int64_t i = n0;
    for (; i + 32 <= n1; i += 32) {
        const uint8_t *p = db + i * 8;
        __m512i t = _mm512_set1_epi64(st[0]);
        __m512i d0 = _mm512_popcnt_epi64(_mm512_xor_si512(_mm512_loadu_si512(p), qv));
        __m512i d1 = _mm512_popcnt_epi64(_mm512_xor_si512(_mm512_loadu_si512(p + 64), qv));
        __m512i d2 = _mm512_popcnt_epi64(_mm512_xor_si512(_mm512_loadu_si512(p + 128), qv));
        __m512i d3 = _mm512_popcnt_epi64(_mm512_xor_si512(_mm512_loadu_si512(p + 192), qv));
        uint32_t m = (uint32_t)_mm512_cmple_epu64_mask(d0, t)
                   | ((uint32_t)_mm512_cmple_epu64_mask(d1, t) << 8)
                   | ((uint32_t)_mm512_cmple_epu64_mask(d2, t) << 16)
                   | ((uint32_t)_mm512_cmple_epu64_mask(d3, t) << 24);
        if (m) {
            int64_t ds[32];
            _mm512_storeu_si512(ds, d0); _mm512_storeu_si512(ds + 8, d1);
            _mm512_storeu_si512(ds + 16, d2); _mm512_storeu_si512(ds + 24, d3);
            while (m) { int j = __builtin_ctz(m); m &= m - 1; accept(st, cnt, bk, k, (int)ds[j], (int32_t)(i + j)); }
        }
    }
    return i;
}

/* ------------------------------------------------ AVX-512 VPOPCNTDQ, W = 4 */
__attribute__((target("avx512f,avx512vpopcntdq,popcnt")))
static int64_t scan32_avx512(const uint8_t *db, int64_t n0, int64_t n1, const uint8_t *q,
                             int32_t *st, int M, int k) {
    int32_t *cnt = st + 2, *bk = st + 2 + (M + 1);
    uint32_t q32; memcpy(&q32, q, 4);
    const __m512i qv = _mm512_set1_epi32((int)q32);
    int64_t i = n0;
    for (; i + 32 <= n1; i += 32) {
        const uint8_t *p = db + i * 4;
        __m512i t = _mm512_set1_epi32(st[0]);
        __m512i d0 = _mm512_popcnt_epi32(_mm512_xor_si512(_mm512_loadu_si512(p), qv));
        __m512i d1 = _mm512_popcnt_epi32(_mm512_xor_si512(_mm512_loadu_si512(p + 64), qv));
        uint32_t m = (uint32_t)_mm512_cmple_epu32_mask(d0, t)
                   | ((uint32_t)_mm512_cmple_epu32_mask(d1, t) << 16);
        if (m) {
            int32_t ds[32];
            _mm512_storeu_si512(ds, d0); _mm512_storeu_si512(ds + 16, d1);
            while (m) { int j = __builtin_ctz(m); m &= m - 1; accept(st, cnt, bk, k, ds[j], (int32_t)(i + j)); }
        }
    }
    return i;
}

/* ------------------------------------------------------------------ AVX2 */
/* No AVX-512 here: popcount bytes with two 16-entry nibble tables (pshufb), sum them per
   code, and test d <= tau for 32 codes at once; only candidates reach the scalar accept. */
__attribute__((target("avx2")))
static inline __m256i pop8_avx2(__m256i x) {
    const __m256i lut = _mm256_setr_epi8(0,1,1,2,1,2,2,3,1,2,2,3,2,3,3,4, 0,1,1,2,1,2,2,3,1,2,2,3,2,3,3,4);
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    return _mm256_add_epi8(_mm256_shuffle_epi8(lut, _mm256_and_si256(x, m4)),
                           _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(x, 4), m4)));
}

/* Bit b set when distance byte b of t is <= tau (unsigned bytes: W = 16 reaches 128). */
__attribute__((target("avx2")))
static inline uint32_t le_mask(__m256i t, int tau) {
    __m256i tv = _mm256_set1_epi8((char)tau);
    return (uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(_mm256_min_epu8(t, tv), t));
}

/* Largest distance accept() can still take: tau, or tau - 1 once k items rank at or below
   it (a later tie at tau loses on position). -1: nothing can enter any more. */
static inline int admit(const int32_t *st, int k) { return st[0] - (st[1] >= k); }

/* Byte b of the packed distances belongs to code i0 + ord[b]; the packing leaves them out
   of position order, so sort the candidates back before accept: ties must rank by position. */
static void accept_group(int32_t *st, int32_t *cnt, int32_t *bk, int k, const uint8_t *ds,
                         uint32_t m, const uint8_t *ord, int64_t i0) {
    uint8_t dist[32]; uint32_t cm = 0;
    while (m) { int b = __builtin_ctz(m); m &= m - 1; cm |= 1u << ord[b]; dist[ord[b]] = ds[b]; }
    while (cm) { int j = __builtin_ctz(cm); cm &= cm - 1; accept(st, cnt, bk, k, dist[j], (int32_t)(i0 + j)); }
}

/* W = 4: 8 codes per register; bytes -> 32-bit sums by two multiply-adds, packed to bytes. */
__attribute__((target("avx2")))
static int64_t scan32_avx2(const uint8_t *db, int64_t n0, int64_t n1, const uint8_t *q,
                           int32_t *st, int M, int k, const uint8_t *ord) {
    int32_t *cnt = st + 2, *bk = st + 2 + (M + 1);
    uint32_t q32; memcpy(&q32, q, 4);
    const __m256i qv = _mm256_set1_epi32((int)q32);
    const __m256i one8 = _mm256_set1_epi8(1), one16 = _mm256_set1_epi16(1);
    int64_t i = n0;
    for (; i + 32 <= n1; i += 32) {
        const __m256i *p = (const __m256i *)(db + i * 4);
        __m256i d[4];
        for (int r = 0; r < 4; r++)
            d[r] = _mm256_madd_epi16(_mm256_maddubs_epi16(
                pop8_avx2(_mm256_xor_si256(_mm256_loadu_si256(p + r), qv)), one8), one16);
        __m256i t = _mm256_packs_epi16(_mm256_packs_epi32(d[0], d[1]), _mm256_packs_epi32(d[2], d[3]));
        int thr = admit(st, k);
        if (thr < 0) return n1;
        uint32_t m = le_mask(t, thr);
        if (m) { uint8_t ds[32]; _mm256_storeu_si256((__m256i *)ds, t); accept_group(st, cnt, bk, k, ds, m, ord, i); }
    }
    return i;
}

/* W = 8 (4 codes per register) and W = 16 (2): per-code sums by psadbw, then the 8 registers'
   sums are shifted into the 8 bytes of each 64-bit lane. */
__attribute__((target("avx2"), always_inline))
static inline int64_t scanw_avx2(const uint8_t *db, int64_t n0, int64_t n1, int W, const uint8_t *q,
                          int32_t *st, int M, int k, const uint8_t *ord) {
    int32_t *cnt = st + 2, *bk = st + 2 + (M + 1);
    __m256i qv;
    if (W == 8) { uint64_t a; memcpy(&a, q, 8); qv = _mm256_set1_epi64x((long long)a); }
    else { qv = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)q)); }
    const __m256i zero = _mm256_setzero_si256();
    const int per = 256 / W;  /* codes per 8 registers: 32 or 16 */
    const uint32_t keep = W == 8 ? 0xffffffffu : 0x00ff00ffu;  /* W = 16: lanes hold a code twice */
    int64_t i = n0;
    for (; i + per <= n1; i += per) {
        const __m256i *p = (const __m256i *)(db + i * W);
        __m256i t = zero;
        for (int r = 0; r < 8; r++) {
            __m256i s = _mm256_sad_epu8(pop8_avx2(_mm256_xor_si256(_mm256_loadu_si256(p + r), qv)), zero);
            if (W == 16) s = _mm256_add_epi64(s, _mm256_shuffle_epi32(s, 0x4e));
            t = _mm256_or_si256(t, _mm256_slli_epi64(s, 8 * r));
        }
        int thr = admit(st, k);
        if (thr < 0) return n1;
        uint32_t m = le_mask(t, thr) & keep;
        if (m) { uint8_t ds[32]; _mm256_storeu_si256((__m256i *)ds, t); accept_group(st, cnt, bk, k, ds, m, ord, i); }
    }
    return i;
}

/* Constant W: the compiler specialises the loop (no W test per register). */
__attribute__((target("avx2")))
static int64_t scan64_avx2(const uint8_t *db, int64_t n0, int64_t n1, const uint8_t *q,
                           int32_t *st, int M, int k, const uint8_t *ord) {
    return scanw_avx2(db, n0, n1, 8, q, st, M, k, ord);
}

__attribute__((target("avx2")))
static int64_t scan128_avx2(const uint8_t *db, int64_t n0, int64_t n1, const uint8_t *q,
                            int32_t *st, int M, int k, const uint8_t *ord) {
    return scanw_avx2(db, n0, n1, 16, q, st, M, k, ord);
}

/* ord[b] for the packing above: which code of the group distance byte b holds. */
static void avx2_order(int W, uint8_t *ord) {
    for (int b = 0; b < 32; b++)
        ord[b] = W == 4 ? (uint8_t)(8 * ((b % 16) / 4) + 4 * (b / 16) + b % 4)
               : W == 8 ? (uint8_t)(4 * (b % 8) + b / 8)
               : (uint8_t)(2 * (b % 8) + b / 16);
}
#endif

/* Bit 0: AVX2, bit 1: AVX-512 VPOPCNTDQ (the scan paths this CPU can run). */
int bgan_simd_support(void) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    return (__builtin_cpu_supports("avx2") ? 1 : 0)
         | (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vpopcntdq") ? 2 : 0);
#else
    return 0;
#endif
}

/* Exact top-k of nq queries over n codes of W bytes (W = 4, or a multiple of 8).
   Ties are broken by position. The database is scanned in blocks that fit in L2
   and every query of the batch visits the block before moving on, so codes are
   read from memory once per batch rather than once per query.
   path: 0 scalar, 1 AVX2, 2 AVX-512 (the caller checks bgan_simd_support).
   scratch: int32 [nq * (2 + (M+1) + (M+1)*k)] with M = 8*W. */
int bgan_topk(const uint8_t *db, int64_t n, int W, const uint8_t *queries, int64_t nq, int k,
              int path, int32_t *scratch, int32_t *out_d, int64_t *out_i) {
    if (k <= 0 || (W != 4 && W % 8 != 0) || n > 0x7fffffff) return -1;
    const int M = 8 * W;
    const int64_t S = 2 + (int64_t)(M + 1) + (int64_t)(M + 1) * k;
    for (int64_t qi = 0; qi < nq; qi++) init_state(scratch + qi * S, M);
    const int64_t block = (W <= 8) ? 32768 : 262144 / W;
#if defined(__x86_64__)
    uint8_t ord[32];
    avx2_order(W, ord);
#endif
    for (int64_t b0 = 0; b0 < n; b0 += block) {
        int64_t b1 = b0 + block < n ? b0 + block : n;
        for (int64_t qi = 0; qi < nq; qi++) {
            int32_t *st = scratch + qi * S;
            const uint8_t *q = queries + qi * W;
            int64_t i = b0;
#if defined(__x86_64__)
            if (path == 2 && W == 8) i = scan64_avx512(db, b0, b1, q, st, M, k);
            else if (path == 2 && W == 4) i = scan32_avx512(db, b0, b1, q, st, M, k);
            else if (path >= 1 && W == 4) i = scan32_avx2(db, b0, b1, q, st, M, k, ord);
            else if (path >= 1 && W == 8) i = scan64_avx2(db, b0, b1, q, st, M, k, ord);
            else if (path >= 1 && W == 16) i = scan128_avx2(db, b0, b1, q, st, M, k, ord);
#endif
            scan_scalar(db, i, b1, W, q, st, M, k);
        }
    }
    for (int64_t qi = 0; qi < nq; qi++) emit(scratch + qi * S, M, k, out_d + qi * k, out_i + qi * k);
    return 0;
}

/* ------------------------------------------ probes for benchmarks/search_speed.py */
/* n rounds of 8 dependent 1-cycle adds: 8n cycles, so timing it gives the core clock. */
int64_t bgan_add_chain(int64_t n) {
    uint64_t x = 0;
    for (int64_t i = 0; i < n; i++) {
#if defined(__x86_64__)
        __asm__ volatile("add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\t"
                         "add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0" : "+r"(x));
#else
        x += 8; __asm__ volatile("" : "+r"(x));
#endif
    }
    return (int64_t)x;
}

/* Streaming read of nbytes (a multiple of 32): the bandwidth a scan of the array can reach. */
#if defined(__x86_64__)
__attribute__((target("avx2")))
static uint64_t read_avx2(const uint8_t *p, int64_t nbytes) {
    __m256i a = _mm256_setzero_si256(), b = a, c = a, d = a;
    int64_t i = 0;
    for (; i + 128 <= nbytes; i += 128) {
        a = _mm256_add_epi64(a, _mm256_loadu_si256((const __m256i *)(p + i)));
        b = _mm256_add_epi64(b, _mm256_loadu_si256((const __m256i *)(p + i + 32)));
        c = _mm256_add_epi64(c, _mm256_loadu_si256((const __m256i *)(p + i + 64)));
        d = _mm256_add_epi64(d, _mm256_loadu_si256((const __m256i *)(p + i + 96)));
    }
    a = _mm256_add_epi64(_mm256_add_epi64(a, b), _mm256_add_epi64(c, d));
    uint64_t s[4]; _mm256_storeu_si256((__m256i *)s, a);
    return s[0] + s[1] + s[2] + s[3];
}
#endif

uint64_t bgan_read_bytes(const uint8_t *p, int64_t nbytes) {
#if defined(__x86_64__)
    if (bgan_simd_support() & 1) return read_avx2(p, nbytes);
#endif
    uint64_t s = 0;
    for (int64_t i = 0; i + 8 <= nbytes; i += 8) { uint64_t w; memcpy(&w, p + i, 8); s += w; }
    return s;
}
