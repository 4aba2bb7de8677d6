/* Native binary convolution: sign packing, xor/popcount micro-kernels, fused epilogue.
 *
 * One build serves every CPU: the SIMD micro-kernels carry function-level target attributes
 * and are chosen at run time (__builtin_cpu_supports), so the extension is compiled with the
 * system compiler's default flags. Paths: "avx512" (VPOPCNTDQ), "avx2" (nibble-table popcount),
 * "portable" (plain C, __builtin_popcountll; also what aarch64 and others run).
 *
 * Layouts (binarize/packed/kernels.py builds the weight layout once, at construction):
 *   activations A[N][Hp][Wp][G][CW]  one word = the signs of 64 channels of one pixel and group,
 *                                    bit set = -1 (x < 0; sign(0) = +1), zero padding packed as +1;
 *   weights     B[G][OB][T][16]      16 output channels innermost, T = kh*kw*CW taps-words, so one
 *                                    activation word meets 16 weight words with one broadcast;
 *   wsum        [G][OB][kh*kw][16]   per-tap weight sums, to remove padding taps exactly.
 * Row windows (geometry.window, chosen by kernels.py when a group has fewer than 64 channels and
 * a kernel row of them fits in fewer words than one word per tap): A[N][Hp][Wo][G][CW] holds,
 * for each output column, the kw input pixels one kernel row reads, channel-minor (bit
 * j*cpg + c), in CW words; B is [G][OB][kh*CW][16] in the same order. With 16 channels a 3x3
 * kernel then takes 3 words per output pixel instead of 9, each a quarter used.
 * dot = K - 2*popcount(a xor w) - (weight sum over the padding taps); pad bits are 0 on both sides.
 *
 * The Python-facing entry releases the GIL and runs on a small pthread pool whose workers spin
 * briefly and then block on a condition variable, so a busy machine is not made busier.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#define BNZ_X86 1
#include <immintrin.h>
#endif

#define OT 16     /* output channels per weight block (all paths) */
#define PT_MAX 8  /* most pixels any micro-kernel takes at once */

enum { PATH_AVX512, PATH_AVX2, PATH_PORTABLE, PATH_COUNT };
static const char *const PATH_NAMES[PATH_COUNT] = {"avx512", "avx2", "portable"};
static const int PATH_PIXELS[PATH_COUNT] = {8, 2, 8};

/* ------------------------------------------------------------------------------------------ */
/* thread pool                                                                                */

/* A task is `total` units; fn(ctx, begin, end, worker) runs units [begin, end). Units are
 * claimed one at a time from a shared counter, so a worker the OS has not scheduled yet (the
 * machine is busy) holds nothing up: the running ones take its share. The counter carries the
 * task's generation in its high half, so a late worker can never claim a unit of a later task
 * with the earlier task's context. */
typedef void (*task_fn)(void *ctx, long begin, long end, int worker);

static struct {
    pthread_mutex_t lock, run_lock;
    pthread_cond_t wake, done;
    atomic_ulong generation;
    atomic_ullong claim;  /* (generation << 32) | next unit */
    atomic_long finished; /* units done */
    long total;
    task_fn fn;
    void *ctx;
    int workers;          /* workers that may join the task in flight, the caller included */
    atomic_int threads;   /* the set_num_threads setting */
    int spawned;          /* pool threads alive (only ever grows) */
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
          PTHREAD_COND_INITIALIZER, 0, 0, 0, 0, NULL, NULL, 1, 1, 0};

/* Spin this many rounds before blocking: covers the gap between two layers of one forward
 * pass without keeping a core busy when nothing comes. */
#define SPIN_ROUNDS 4000

static inline void cpu_relax(void) {
#if defined(BNZ_X86)
    _mm_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* Claims and runs units of task `generation` until none is left. */
static void pool_work(unsigned long generation, task_fn fn, void *ctx, long total, int worker) {
    const unsigned long long tag = (unsigned long long)(generation & 0xffffffffu) << 32;
    for (;;) {
        unsigned long long claim = atomic_load(&pool.claim);
        if ((claim & ~0xffffffffull) != tag || (long)(claim & 0xffffffffu) >= total) return;
        if (!atomic_compare_exchange_weak(&pool.claim, &claim, claim + 1)) continue;
        const long unit = (long)(claim & 0xffffffffu);
        fn(ctx, unit, unit + 1, worker);
        if (atomic_fetch_add(&pool.finished, 1) + 1 == total) {
            pthread_mutex_lock(&pool.lock);
            pthread_cond_broadcast(&pool.done);
            pthread_mutex_unlock(&pool.lock);
        }
    }
}

typedef struct {
    int index;
    unsigned long seen; /* the generation when it was created: tasks after it are its to run */
} worker_start;

static void *pool_worker(void *arg) {
    const worker_start start = *(worker_start *)arg;
    free(arg);
    const int index = start.index;
    unsigned long seen = start.seen;
    for (;;) {
        for (int spin = 0; spin < SPIN_ROUNDS && atomic_load(&pool.generation) == seen; spin++) cpu_relax();
        pthread_mutex_lock(&pool.lock);
        while (atomic_load(&pool.generation) == seen) pthread_cond_wait(&pool.wake, &pool.lock);
        seen = atomic_load(&pool.generation);
        const task_fn fn = pool.fn;
        void *ctx = pool.ctx;
        const long total = pool.total;
        const int workers = pool.workers;
        pthread_mutex_unlock(&pool.lock);
        if (index < workers) pool_work(seen, fn, ctx, total, index);
    }
    return NULL;
}

/* Runs the `total` units of fn on up to `workers` threads, the caller included (worker 0).
 * `workers` is at most what the caller read from pool.threads (it sized per-worker scratch by
 * that); returns once every unit is done. */
static void pool_run(task_fn fn, void *ctx, long total, int workers) {
    pthread_mutex_lock(&pool.run_lock);
    if (workers > pool.spawned + 1) workers = pool.spawned + 1;
    if (workers <= 1 || total <= 1) {
        if (total > 0) fn(ctx, 0, total, 0);
        pthread_mutex_unlock(&pool.run_lock);
        return;
    }
    pthread_mutex_lock(&pool.lock);
    const unsigned long generation = atomic_load(&pool.generation) + 1;
    pool.fn = fn;
    pool.ctx = ctx;
    pool.total = total;
    pool.workers = workers;
    atomic_store(&pool.finished, 0);
    atomic_store(&pool.claim, (unsigned long long)(generation & 0xffffffffu) << 32);
    atomic_store(&pool.generation, generation);
    pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.lock);
    pool_work(generation, fn, ctx, total, 0);
    for (int spin = 0; spin < SPIN_ROUNDS && atomic_load(&pool.finished) < total; spin++) cpu_relax();
    pthread_mutex_lock(&pool.lock);
    while (atomic_load(&pool.finished) < total) pthread_cond_wait(&pool.done, &pool.lock);
    pthread_mutex_unlock(&pool.lock);
    pthread_mutex_unlock(&pool.run_lock);
}

static int pool_set_threads(int threads) {
    pthread_mutex_lock(&pool.run_lock);
    int ok = 1;
    while (pool.spawned < threads - 1) {
        pthread_t thread;
        worker_start *start = malloc(sizeof *start);
        if (start) *start = (worker_start){pool.spawned + 1, atomic_load(&pool.generation)};
        if (!start || pthread_create(&thread, NULL, pool_worker, start) != 0) {
            free(start);
            ok = 0;
            break;
        }
        pthread_detach(thread);
        pool.spawned++;
    }
    pool.threads = ok ? threads : pool.spawned + 1;
    pthread_mutex_unlock(&pool.run_lock);
    return ok;
}

/* A forked child has none of the parent's pool threads: start again with none (they are
 * re-created by the next set_num_threads), or the first parallel call would wait forever. */
static void pool_after_fork_in_child(void) {
    pthread_mutex_init(&pool.lock, NULL);
    pthread_mutex_init(&pool.run_lock, NULL);
    pthread_cond_init(&pool.wake, NULL);
    pthread_cond_init(&pool.done, NULL);
    pool.spawned = 0;
}


/* ------------------------------------------------------------------------------------------ */
/* geometry of one call                                                                       */

typedef struct {
    int n, c, h, w, groups, cpg, cw, kh, kw, sh, sw, dh, dw, pt, pl, hp, wp, o, og, ob, ho, wo, k, window, taps;
    int columns; /* pixels per row of A: wp, or wo with row windows */
} geometry;

typedef struct {
    const geometry *g;
    const float *x;
    uint64_t *a;           /* packed activations */
    const uint64_t *b;     /* packed weights */
    const int32_t *wsum;
    const float *scale, *shift, *slope, *residual;
    void *out;
    int64_t *offsets;      /* word offset of tap-word t from a pixel's first word */
    uint64_t *rows;        /* row windows only: per worker, one input row's pixel words [Wp][G] */
    const int *row_class, *column_class; /* padding class of each output row / column (0: none) */
    int row_classes, column_classes;
    const int32_t *corrections; /* [G*OB][row class][column class][16] weight sums of padding taps */
    int path, activation, integer_output;
} conv_call;

/* ------------------------------------------------------------------------------------------ */
/* sign packing: x[N][C][H][W] float -> A (interior only; the caller zeroed the padding)       */

static uint64_t spread_bits[256]; /* bit p of the index -> bit 0 of byte p */

static void init_spread(void) {
    for (int m = 0; m < 256; m++) {
        uint64_t v = 0;
        for (int p = 0; p < 8; p++) v |= (uint64_t)((m >> p) & 1) << (8 * p);
        spread_bits[m] = v;
    }
}

static inline unsigned mask_portable(const float *x, int count) {
    unsigned m = 0;
    for (int p = 0; p < count; p++) m |= (unsigned)(x[p] < 0.0f) << p; /* -0.0 and NaN -> +1 */
    return m;
}

#if defined(BNZ_X86)
__attribute__((target("avx2"))) static inline unsigned mask_avx2(const float *x, int count) {
    if (count < 8) return mask_portable(x, count);
    __m256 v = _mm256_loadu_ps(x);
    return (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_LT_OQ));
}
#endif

/* Portable: 8-pixel sign masks spread into t[byte] (bit c%8 of byte p = channel c, pixel p),
 * then an 8x8 byte transpose gives one word per pixel. */
static inline void block_portable(const float *x, long plane, int channels, int count, uint64_t *words) {
    uint64_t t[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int cc = 0; cc < channels; cc++) t[cc >> 3] |= spread_bits[mask_portable(x + cc * plane, count)] << (cc & 7);
    for (int p = 0; p < 8; p++) {
        uint64_t v = 0;
        for (int byte = 0; byte < 8; byte++) v |= ((t[byte] >> (8 * p)) & 0xff) << (8 * byte);
        words[p] = v;
    }
}

/* Input row (n, y) into `first` (its pixel x = 0, `words` words per pixel and group, consecutive
 * pixels G*words apart): for every block of 8 pixels, (up to) 64 channels become 8 words. */
static void pack_row_portable(const conv_call *call, int n, int y, uint64_t *first, int words) {
    const geometry *g = call->g;
    const long plane = (long)g->h * g->w, step = (long)g->groups * words;
    for (int grp = 0; grp < g->groups; grp++) {
        for (int word = 0; word < words; word++) {
            const int c0 = grp * g->cpg + word * 64;
            const int channels = g->cpg - word * 64 < 64 ? g->cpg - word * 64 : 64;
            const float *row = call->x + ((long)n * g->c + c0) * plane + (long)y * g->w;
            uint64_t *dst = first + grp * words + word;
            for (int x0 = 0; x0 < g->w; x0 += 8) {
                const int count = g->w - x0 < 8 ? g->w - x0 : 8;
                uint64_t out[8];
                block_portable(row + x0, plane, channels, count, out);
                for (int p = 0; p < count; p++) dst[(long)(x0 + p) * step] = out[p];
            }
        }
    }
}

#if defined(BNZ_X86)
#define PACK_SPAN 32 /* blocks of 8 pixels whose masks the AVX2 packer collects per channel pass */

/* AVX2, as pack_row_portable but channel by channel: each channel's row segment is read front to back
 * into one byte of 8-pixel sign mask per block (reading the 64 channels of one block instead
 * touches lines a plane apart, which for small planes share one L1 set), then per block,
 * shifting pixel p's bit to bit 7 of every byte and vpmovmskb collects 32 channels at once. */
__attribute__((target("avx2"))) static void pack_row_avx2(const conv_call *call, int n, int y, uint64_t *first,
                                                           int words) {
    const geometry *g = call->g;
    const long plane = (long)g->h * g->w, step = (long)g->groups * words;
    uint8_t masks[PACK_SPAN][64];
    for (int grp = 0; grp < g->groups; grp++) {
        for (int word = 0; word < words; word++) {
            const int c0 = grp * g->cpg + word * 64;
            const int channels = g->cpg - word * 64 < 64 ? g->cpg - word * 64 : 64;
            const float *row = call->x + ((long)n * g->c + c0) * plane + (long)y * g->w;
            uint64_t *dst = first + grp * words + word;
            for (int x0 = 0; x0 < g->w; x0 += 8 * PACK_SPAN) {
                const int span = g->w - x0 < 8 * PACK_SPAN ? g->w - x0 : 8 * PACK_SPAN, blocks = (span + 7) / 8;
                if (channels < 64)
                    for (int b = 0; b < blocks; b++) memset(masks[b] + channels, 0, (size_t)(64 - channels));
                for (int cc = 0; cc < channels; cc++) {
                    const float *src = row + cc * plane + x0;
                    for (int b = 0; b < blocks; b++)
                        masks[b][cc] = (uint8_t)mask_avx2(src + 8 * b, span - 8 * b < 8 ? span - 8 * b : 8);
                }
                for (int b = 0; b < blocks; b++) {
                    const __m256i low = _mm256_loadu_si256((const __m256i *)masks[b]);
                    const __m256i high = _mm256_loadu_si256((const __m256i *)(masks[b] + 32));
                    uint64_t out[8];
#define PIXEL(P)                                                                               \
    out[P] = (uint64_t)(uint32_t)_mm256_movemask_epi8(_mm256_slli_epi16(low, 7 - (P)))         \
             | (uint64_t)(uint32_t)_mm256_movemask_epi8(_mm256_slli_epi16(high, 7 - (P))) << 32;
                    PIXEL(0) PIXEL(1) PIXEL(2) PIXEL(3) PIXEL(4) PIXEL(5) PIXEL(6) PIXEL(7)
#undef PIXEL
                    const int count = span - 8 * b < 8 ? span - 8 * b : 8;
                    for (int p = 0; p < count; p++) dst[(long)(x0 + 8 * b + p) * step] = out[p];
                }
            }
        }
    }
}
#endif

static void pack_row(const conv_call *call, int n, int y, uint64_t *first, int words) {
#if defined(BNZ_X86)
    if (call->path != PATH_PORTABLE) {
        pack_row_avx2(call, n, y, first, words);
        return;
    }
#endif
    pack_row_portable(call, n, y, first, words);
}

/* Row windows of input row (n, y): the row's pixel words (one per group: cpg < 64) go to the
 * worker's scratch row, whose padding columns stay zero, then each output column's window
 * appends its kw pixels' cpg bits. */
static void pack_windows(const conv_call *call, int n, int y, int worker) {
    const geometry *g = call->g;
    uint64_t *row = call->rows + (long)worker * g->wp * g->groups;
    pack_row(call, n, y, row + (long)g->pl * g->groups, 1);
    uint64_t *dst = call->a + ((long)n * g->hp + y + g->pt) * g->columns * g->groups * g->cw;
    const int cpg = g->cpg, kw = g->kw;
    const long pixel_step = (long)g->dw * g->groups;
    if (g->cw == 1) { /* a kernel row in one word: no field straddles two */
        /* tap by tap over the whole row: with stride 1, window i takes pixel word i + j*pixel_step,
         * one contiguous (vectorized) loop per tap instead of a short loop per window */
        const long windows = (long)g->wo * g->groups;
        memset(dst, 0, (size_t)windows * sizeof *dst);
        for (int j = 0; j < kw; j++) {
            const uint64_t *tap = row + j * pixel_step;
            const int shift = j * cpg;
            if (g->sw == 1) {
                for (long i = 0; i < windows; i++) dst[i] |= tap[i] << shift;
            } else {
                for (int ox = 0; ox < g->wo; ox++)
                    for (int grp = 0; grp < g->groups; grp++)
                        dst[(long)ox * g->groups + grp] |= tap[(long)ox * g->sw * g->groups + grp] << shift;
            }
        }
        return;
    }
    for (int ox = 0; ox < g->wo; ox++) {
        for (int grp = 0; grp < g->groups; grp++) {
            const uint64_t *pixel = row + (long)ox * g->sw * g->groups + grp;
            uint64_t current = 0; /* the word being filled, its low `filled` bits taken (cpg < 64) */
            int filled = 0;
            for (int j = 0; j < kw; j++) {
                const uint64_t v = pixel[j * pixel_step];
                current |= v << filled;
                if (filled + cpg >= 64) {
                    *dst++ = current;
                    current = filled ? v >> (64 - filled) : 0;
                    filled += cpg - 64;
                } else {
                    filled += cpg;
                }
            }
            if (filled) *dst++ = current;
        }
    }
}

/* Units: rows (n, y) of the input. */
static void pack_task(void *ctx, long begin, long end, int worker) {
    const conv_call *call = ctx;
    const geometry *g = call->g;
    for (long r = begin; r < end; r++) {
        int n = (int)(r / g->h), y = (int)(r % g->h);
        if (g->window) {
            pack_windows(call, n, y, worker);
        } else {
            const long step = (long)g->groups * g->cw;
            pack_row(call, n, y, call->a + (((long)n * g->hp + y + g->pt) * g->wp + g->pl) * step, g->cw);
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* micro-kernels: dot = k - 2 * popcount(a xor w) summed over T tap-words, PT pixels x 16      */
/* channels. a[p] points at pixel p's first word (group included); w at the block's [T][16]     */
/* weights. The dots go straight into the chunk's channel-major rows, dot[j][column + p] (the   */
/* layout the epilogue reads), so no transposition pass runs between the two.                  */

#define DOT_COLUMNS (CHUNK + PT_MAX) /* a chunk's pixels plus a short last tile's repeats */
#define CHUNK 64                     /* pixels per work unit: a multiple of every path's tile */

/* 8 pixels x 16 channels in generic vectors (8 x 64-bit lanes, GCC/Clang vector extensions).
 * One source for two paths, differing only in the lane popcount: compiled for AVX-512 VPOPCNTDQ
 * the 16 accumulators are zmm registers and each step is vpxorq/vpopcntq/vpaddq against a
 * broadcast activation word; compiled for the default target it is the portable path. So the
 * tests that run the portable path on any machine check the code the AVX-512 path runs. */
typedef uint64_t u64x8 __attribute__((vector_size(64), aligned(8)));

#define DEFINE_TILE(NAME, ATTRIBUTES, POPCOUNT)                                                \
    ATTRIBUTES static void NAME(const uint64_t *const *a, const int64_t *off, int taps, const uint64_t *w, \
                                int k, int32_t dot[OT][DOT_COLUMNS], int column) {             \
        u64x8 s[8][2];                                                                         \
        for (int p = 0; p < 8; p++) s[p][0] = s[p][1] = (u64x8){0};                            \
        for (int t = 0; t < taps; t++) {                                                       \
            const int64_t o = off[t];                                                          \
            u64x8 w0, w1;                                                                      \
            memcpy(&w0, w + (long)t * OT, sizeof w0);                                          \
            memcpy(&w1, w + (long)t * OT + 8, sizeof w1);                                      \
            for (int p = 0; p < 8; p++) {                                                      \
                u64x8 v;                                                                       \
                for (int lane = 0; lane < 8; lane++) v[lane] = a[p][o];                        \
                s[p][0] += POPCOUNT(w0 ^ v);                                                   \
                s[p][1] += POPCOUNT(w1 ^ v);                                                   \
            }                                                                                  \
        }                                                                                      \
        for (int p = 0; p < 8; p++)                                                            \
            for (int lane = 0; lane < 8; lane++) {                                             \
                dot[lane][column + p] = k - 2 * (int32_t)s[p][0][lane];                        \
                dot[8 + lane][column + p] = k - 2 * (int32_t)s[p][1][lane];                    \
            }                                                                                  \
    }

/* Bit-slicing popcount on whole vectors (no popcnt instruction needed, no libgcc call). */
static inline __attribute__((always_inline)) u64x8 popcount_portable(u64x8 v) {
    v -= (v >> 1) & 0x5555555555555555ull;
    v = (v & 0x3333333333333333ull) + ((v >> 2) & 0x3333333333333333ull);
    v = (v + (v >> 4)) & 0x0f0f0f0f0f0f0f0full;
    v += v >> 8;
    v += v >> 16;
    v += v >> 32;
    return v & 0x7f;
}
DEFINE_TILE(tile_portable, , popcount_portable)

#if defined(BNZ_X86)
#define AVX512 __attribute__((target("avx512f,avx512vpopcntdq")))
AVX512 static inline __attribute__((always_inline)) u64x8 popcount_avx512(u64x8 v) {
    return (u64x8)_mm512_popcnt_epi64((__m512i)v);
}
DEFINE_TILE(tile_avx512, AVX512, popcount_avx512)

/* 2 pixels x 16 channels, in two passes of 8 channels (2 ymm) so that the 4 accumulators,
 * the table and the temporaries fit the 16 ymm registers (no spilled accumulator chains).
 * Popcount by nibble table (vpshufb): byte counts add up in 8-bit lanes for at most 31 steps
 * (8 per step), then vpsadbw folds them into 64-bit sums.
 * Measured on Zen 3 (K = 576..4608) and not kept: a third pixel counted with scalar popcnt on
 * the idle integer ports (no gain: the front end, not the vector ports, is the limit), and
 * 4 pixels per tile (the 8 byte accumulators spill). Harley-Seal carry-save adders over taps
 * need 4 state vectors per accumulator and a final popcount of each: by operation count at
 * most 14 % fewer instructions at K = 4608 (72 tap-words), none at K <= 1152. */
__attribute__((target("avx2"))) static void tile_avx2(const uint64_t *const *a, const int64_t *off, int taps,
                                                       const uint64_t *w, int k, int32_t dot[OT][DOT_COLUMNS],
                                                       int column) {
    const __m256i table = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                           0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i low = _mm256_set1_epi8(0x0f), zero = _mm256_setzero_si256();
    const uint64_t *a0 = a[0], *a1 = a[1];
    for (int half = 0; half < 2; half++) {
        const uint64_t *wh = w + 8 * half;
        __m256i total00 = zero, total01 = zero, total10 = zero, total11 = zero;
        for (int t0 = 0; t0 < taps; t0 += 31) {
            const int t1 = t0 + 31 < taps ? t0 + 31 : taps;
            __m256i b00 = zero, b01 = zero, b10 = zero, b11 = zero;
            for (int t = t0; t < t1; t++) {
                const int64_t o = off[t];
                const uint64_t *wt = wh + (long)t * OT;
                const __m256i w0 = _mm256_loadu_si256((const __m256i *)wt);
                const __m256i w1 = _mm256_loadu_si256((const __m256i *)(wt + 4));
                const __m256i v0 = _mm256_set1_epi64x((long long)a0[o]);
                const __m256i v1 = _mm256_set1_epi64x((long long)a1[o]);
#define COUNT(ACC, V, W)                                                                       \
    {                                                                                          \
        const __m256i x = _mm256_xor_si256(V, W);                                              \
        ACC = _mm256_add_epi8(ACC, _mm256_shuffle_epi8(table, _mm256_and_si256(x, low)));      \
        ACC = _mm256_add_epi8(ACC, _mm256_shuffle_epi8(table, _mm256_and_si256(_mm256_srli_epi16(x, 4), low))); \
    }
                COUNT(b00, v0, w0) COUNT(b01, v0, w1) COUNT(b10, v1, w0) COUNT(b11, v1, w1)
#undef COUNT
            }
            total00 = _mm256_add_epi64(total00, _mm256_sad_epu8(b00, zero));
            total01 = _mm256_add_epi64(total01, _mm256_sad_epu8(b01, zero));
            total10 = _mm256_add_epi64(total10, _mm256_sad_epu8(b10, zero));
            total11 = _mm256_add_epi64(total11, _mm256_sad_epu8(b11, zero));
        }
        /* lane j of pixel 0's and pixel 1's 64-bit sums -> one 64-bit store of the two int32 dots
         * at dot[j][column], dot[j][column + 1] */
        const __m256i kk = _mm256_set1_epi64x(k);
        const __m256i low_dots = _mm256_sub_epi64(kk, _mm256_add_epi64(total00, total00));
        const __m256i high_dots = _mm256_sub_epi64(kk, _mm256_add_epi64(total01, total01));
        const __m256i pairs_low = _mm256_blend_epi32(low_dots, _mm256_slli_epi64(_mm256_sub_epi64(kk, _mm256_add_epi64(total10, total10)), 32), 0xaa);
        const __m256i pairs_high = _mm256_blend_epi32(high_dots, _mm256_slli_epi64(_mm256_sub_epi64(kk, _mm256_add_epi64(total11, total11)), 32), 0xaa);
        int64_t lanes[8];
        _mm256_storeu_si256((__m256i *)lanes, pairs_low);
        _mm256_storeu_si256((__m256i *)(lanes + 4), pairs_high);
        for (int j = 0; j < 8; j++) memcpy(&dot[8 * half + j][column], &lanes[j], sizeof lanes[j]);
    }
}
#endif

typedef void (*tile_fn)(const uint64_t *const *, const int64_t *, int, const uint64_t *, int, int32_t[OT][DOT_COLUMNS],
                        int);

static tile_fn tile_kernel(int path) {
#if defined(BNZ_X86)
    if (path == PATH_AVX512) return tile_avx512;
    if (path == PATH_AVX2) return tile_avx2;
#endif
    (void)path;
    return tile_portable;
}

/* ------------------------------------------------------------------------------------------ */
/* convolution driver: units = (group, 16-channel block, chunk of up to CHUNK output pixels of  */
/* one image). A chunk's pixels are consecutive in every output plane, so the epilogue runs as  */
/* contiguous (vectorizable) loops per channel once the micro-kernels have filled the chunk.    */


/* Padding taps. Those of output (oy, ox) are the first and last few kernel rows (cut off at the
 * top and bottom) and columns (at the left and right), so outputs of one row class and one column
 * class lose the same weight sums: plan_tables tabulates them once per plan and weight block.
 * classify() gives each output position along one axis its class, (taps cut off before, after)
 * pairs in `cuts`, class 0 = (0, 0); returns the number of classes. */
static int classify(int outputs, int stride, int dilation, int taps, int pad, int size, int *class_of, int *cuts) {
    int classes = 1;
    cuts[0] = cuts[1] = 0;
    for (int o = 0; o < outputs; o++) {
        int before = 0, after = 0;
        for (int t = 0; t < taps; t++) {
            const int at = o * stride + t * dilation - pad;
            before += at < 0, after += at >= size;
        }
        int c = 0;
        while (c < classes && (cuts[2 * c] != before || cuts[2 * c + 1] != after)) c++;
        if (c == classes) cuts[2 * c] = before, cuts[2 * c + 1] = after, classes++;
        class_of[o] = c;
    }
    return classes;
}

/* corrections[block][r][c][j] = the weight sums (wsum) of the taps row class r and column class
 * c cut off, for the block's 16 channels j. */
static void tabulate_corrections(const conv_call *call, const int *row_cuts, const int *column_cuts,
                                 int32_t *corrections) {
    const geometry *g = call->g;
    const int blocks = g->groups * g->ob, area = g->kh * g->kw;
    for (int block = 0; block < blocks; block++) {
        for (int r = 0; r < call->row_classes; r++) {
            for (int c = 0; c < call->column_classes; c++) {
                int32_t *sum = corrections + (((long)block * call->row_classes + r) * call->column_classes + c) * OT;
                memset(sum, 0, OT * sizeof(int32_t));
                for (int i = 0; i < g->kh; i++) {
                    const int row_cut = i < row_cuts[2 * r] || i >= g->kh - row_cuts[2 * r + 1];
                    for (int j = 0; j < g->kw; j++) {
                        if (!row_cut && j >= column_cuts[2 * c] && j < g->kw - column_cuts[2 * c + 1]) continue;
                        const int32_t *w = call->wsum + ((long)block * area + i * g->kw + j) * OT;
                        for (int lane = 0; lane < OT; lane++) sum[lane] += w[lane];
                    }
                }
            }
        }
    }
}

/* y = act(dot * scale + shift + residual) over `count` consecutive outputs of one channel, in one
 * pass: each activation and the residual's presence get a loop of their own, so no output is
 * stored and read back between the steps (three passes over y cost a third of the epilogue). */
#define EPILOGUE_LOOP(ACTIVATE)                                                                \
    if (r) {                                                                                   \
        for (int p = 0; p < count; p++) {                                                      \
            float v = (float)dot[p] * scale + shift;                                           \
            v += r[p];                                                                         \
            y[p] = ACTIVATE;                                                                   \
        }                                                                                      \
    } else {                                                                                   \
        for (int p = 0; p < count; p++) {                                                      \
            const float v = (float)dot[p] * scale + shift;                                     \
            y[p] = ACTIVATE;                                                                   \
        }                                                                                      \
    }

static inline __attribute__((always_inline)) void epilogue(const conv_call *call, int o, const int32_t *restrict dot,
                                                            long at, int count) {
    if (call->integer_output) {
        memcpy((int32_t *)call->out + at, dot, (size_t)count * sizeof(int32_t));
        return;
    }
    const float scale = call->scale[o], shift = call->shift[o];
    float *restrict y = (float *)call->out + at;
    const float *restrict r = call->residual ? call->residual + at : NULL;
    if (call->activation == 1) {
        EPILOGUE_LOOP(v > 0.0f ? v : 0.0f)
    } else if (call->activation == 2) {
        EPILOGUE_LOOP(v < -1.0f ? -1.0f : (v > 1.0f ? 1.0f : v))
    } else if (call->activation == 3) {
        const float slope = call->slope[o];
        EPILOGUE_LOOP(v >= 0.0f ? v : v * slope)
    } else {
        EPILOGUE_LOOP(v)
    }
}
#undef EPILOGUE_LOOP

/* Units of one call. Inlined twice: for AVX2 (the epilogue's loops in ymm registers; every SIMD
 * path uses it) and for the default target (the portable path). */
static inline __attribute__((always_inline)) void conv_units(void *ctx, long begin, long end, int worker) {
    const conv_call *call = ctx;
    const geometry *g = call->g;
    const int pixels_per_tile = PATH_PIXELS[call->path];
    const tile_fn tile = tile_kernel(call->path);
    const long plane = (long)g->ho * g->wo, chunks = (plane + CHUNK - 1) / CHUNK;
    const long words_per_pixel = (long)g->groups * g->cw;
    int32_t dot[OT][DOT_COLUMNS];
    const uint64_t *a[CHUNK + PT_MAX];
    int edge[CHUNK], edge_class[CHUNK];
    (void)worker;
    for (long unit = begin; unit < end; unit++) {
        const long chunk = unit % chunks, image = unit / chunks % g->n, block = unit / chunks / g->n;
        const int grp = (int)(block / g->ob), ob = (int)(block % g->ob);
        const long first = chunk * CHUNK;
        const int count = plane - first < CHUNK ? (int)(plane - first) : CHUNK;
        const uint64_t *image_words = call->a + image * g->hp * g->columns * words_per_pixel + (long)grp * g->cw;
        /* a window per output column; pixel pointers and padding classes output row by output row */
        const long column_words = (g->window ? 1 : g->sw) * words_per_pixel;
        int oy = (int)(first / g->wo), ox = (int)(first % g->wo), edges = 0;
        for (int p = 0; p < count; oy++, ox = 0) {
            const int run = g->wo - ox < count - p ? g->wo - ox : count - p;
            const uint64_t *pixel = image_words + (long)oy * g->sh * g->columns * words_per_pixel + ox * column_words;
            for (int q = 0; q < run; q++) a[p + q] = pixel + q * column_words;
            const int row_class = call->row_class[oy] * call->column_classes;
            for (int q = 0; q < run; q++) {
                const int column_class = call->column_class[ox + q];
                if (row_class | column_class) edge[edges] = p + q, edge_class[edges++] = row_class + column_class;
            }
            p += run;
        }
        for (int p = count; p < count + pixels_per_tile; p++) a[p] = a[count - 1]; /* short tiles repeat */
        for (int t0 = 0; t0 < count; t0 += pixels_per_tile) {
            tile(a + t0, call->offsets, g->taps, call->b + block * g->taps * OT, g->k, dot, t0);
        }
        const int channels = g->og - ob * OT < OT ? g->og - ob * OT : OT;
        const int32_t *corrections = call->corrections + block * call->row_classes * call->column_classes * OT;
        for (int e = 0; e < edges; e++) { /* remove the padding taps' weight sums */
            const int32_t *correction = corrections + edge_class[e] * OT;
            for (int j = 0; j < OT; j++) dot[j][edge[e]] -= correction[j];
        }
        for (int j = 0; j < channels; j++) {
            const int o = grp * g->og + ob * OT + j;
            epilogue(call, o, dot[j], (image * g->o + o) * plane + first, count);
        }
    }
}


static void conv_task_portable(void *ctx, long begin, long end, int worker) { conv_units(ctx, begin, end, worker); }
#if defined(BNZ_X86)
__attribute__((target("avx2"))) static void conv_task_avx2(void *ctx, long begin, long end, int worker) {
    conv_units(ctx, begin, end, worker);
}
#endif

/* Everything about a call but its input, residual and output: the geometry, the padding classes
 * and their correction tables, the tap offsets, and views of the layer's weight and epilogue
 * buffers. kernels.py prepares one per layer, input shape and path and keeps it, so that a call
 * parses four arguments and tabulates nothing (on ResNet-20's small layers the per-call setup
 * was a tenth of the call). Read-only once made: concurrent calls share it. */
typedef struct {
    geometry g;
    conv_call fixed;  /* the fields of a call that stay the same; fixed.g points at g */
    int *classes;     /* the padding class of each output row, then of each output column */
    int32_t *corrections;
    int64_t *offsets;
    Py_buffer weights, wsum, scale, shift, slope; /* slope.obj is NULL without a slope */
} conv_plan;

static void plan_free(conv_plan *plan) {
    free(plan->classes), free(plan->corrections), free(plan->offsets);
    Py_buffer *views[] = {&plan->weights, &plan->wsum, &plan->scale, &plan->shift, &plan->slope};
    for (int i = 0; i < 5; i++)
        if (views[i]->obj) PyBuffer_Release(views[i]);
    free(plan);
}

/* The plan's padding classes, correction tables and tap offsets (fixed.g and fixed.wsum set);
 * -1 when out of memory. */
static int plan_tables(conv_plan *plan) {
    const geometry *g = &plan->g;
    conv_call *call = &plan->fixed;
    /* (before, after) cuts of each output row class, then of each output column class */
    int *cuts = malloc((size_t)2 * (g->ho + g->wo + 2) * sizeof(int));
    plan->classes = malloc((size_t)(g->ho + g->wo) * sizeof(int));
    plan->offsets = malloc((size_t)g->taps * sizeof(int64_t));
    if (!cuts || !plan->classes || !plan->offsets) {
        free(cuts);
        return -1;
    }
    int *row_cuts = cuts, *column_cuts = cuts + 2 * (g->ho + 1);
    call->row_class = plan->classes, call->column_class = plan->classes + g->ho;
    call->row_classes = classify(g->ho, g->sh, g->dh, g->kh, g->pt, g->h, plan->classes, row_cuts);
    call->column_classes = classify(g->wo, g->sw, g->dw, g->kw, g->pl, g->w, plan->classes + g->ho, column_cuts);
    plan->corrections = malloc((size_t)g->groups * g->ob * call->row_classes * call->column_classes * OT
                               * sizeof(int32_t));
    if (plan->corrections) tabulate_corrections(call, row_cuts, column_cuts, plan->corrections);
    free(cuts);
    if (!plan->corrections) return -1;
    call->corrections = plan->corrections;
    const int tap_columns = g->window ? 1 : g->kw; /* a window holds a whole kernel row */
    for (int i = 0, t = 0; i < g->kh; i++)
        for (int j = 0; j < tap_columns; j++)
            for (int word = 0; word < g->cw; word++, t++)
                plan->offsets[t] = ((long)i * g->dh * g->columns + (long)j * g->dw) * g->groups * g->cw + word;
    call->offsets = plan->offsets;
    return 0;
}

/* Runs a call made from a plan (x, residual, out and integer_output set); -1 when out of memory. */
static int run_conv(conv_call *call) {
    const geometry *g = call->g;
    const size_t words = (size_t)g->n * g->hp * g->columns * g->groups * g->cw;
    void *buffer = NULL;
    /* below ~2^22 bit-MACs (some microseconds) waking a second thread costs more than it saves */
    const double work = (double)g->n * g->ho * g->wo * g->o * g->k;
    const int workers = work < (double)(1 << 22) ? 1 : pool.threads;
    uint64_t *rows = g->window ? calloc((size_t)workers * g->wp * g->groups, sizeof(uint64_t)) : NULL;
    if ((g->window && !rows) || posix_memalign(&buffer, 64, (words ? words : 1) * sizeof(uint64_t)) != 0) {
        free(rows);
        return -1;
    }
    memset(buffer, 0, words * sizeof(uint64_t));
    call->a = buffer;
    call->rows = rows;
    const long chunks = ((long)g->ho * g->wo + CHUNK - 1) / CHUNK;
    pool_run(pack_task, call, (long)g->n * g->h, workers);
    task_fn conv_task = conv_task_portable;
#if defined(BNZ_X86)
    if (call->path != PATH_PORTABLE) conv_task = conv_task_avx2;
#endif
    pool_run(conv_task, call, (long)g->groups * g->ob * g->n * chunks, workers);
    free(rows), free(buffer);
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Python bindings                                                                            */

static int cpu_has(int path) {
#if defined(BNZ_X86)
    __builtin_cpu_init();
    if (path == PATH_AVX512)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vpopcntdq");
    if (path == PATH_AVX2) return __builtin_cpu_supports("avx2");
#endif
    return path == PATH_PORTABLE;
}

static PyObject *py_paths(PyObject *self, PyObject *args) {
    (void)self, (void)args;
    PyObject *names = PyList_New(0);
    for (int path = 0; names && path < PATH_COUNT; path++) {
        if (!cpu_has(path)) continue;
        PyObject *name = PyUnicode_FromString(PATH_NAMES[path]);
        if (!name || PyList_Append(names, name) < 0) Py_CLEAR(names);
        Py_XDECREF(name);
    }
    return names;
}

static PyObject *py_set_threads(PyObject *self, PyObject *args) {
    (void)self;
    int threads;
    if (!PyArg_ParseTuple(args, "i", &threads)) return NULL;
    if (threads < 1) threads = 1;
    int ok;
    Py_BEGIN_ALLOW_THREADS ok = pool_set_threads(threads);
    Py_END_ALLOW_THREADS
    if (!ok) PyErr_WarnEx(PyExc_RuntimeWarning, "could not start every kernel thread", 1);
    return PyLong_FromLong(pool.threads);
}

static const char PLAN_NAME[] = "binarize.packed.conv_plan";

static void plan_capsule_free(PyObject *capsule) { plan_free(PyCapsule_GetPointer(capsule, PLAN_NAME)); }

/* conv_plan(geometry, weights, wsum, scale, shift, slope, path, activation) -> plan
 * geometry = (n, c, h, w, groups, kh, kw, sh, sw, dh, dw, pt, pl, hp, wp, o, ob, ho, wo, k, cpg, cw, window)
 * Buffers are C-contiguous and checked by kernels.py; slope may be None. The plan keeps views of
 * the buffers until it is freed. */
static PyObject *py_conv_plan(PyObject *self, PyObject *args) {
    (void)self;
    conv_plan *plan = calloc(1, sizeof *plan);
    if (!plan) return PyErr_NoMemory();
    geometry *g = &plan->g;
    conv_call *call = &plan->fixed;
    PyObject *slope_obj;
    const char *path_name;
    if (!PyArg_ParseTuple(args, "(iiiiiiiiiiiiiiiiiiiiiip)y*y*y*y*Osi", &g->n, &g->c, &g->h, &g->w, &g->groups,
                          &g->kh, &g->kw, &g->sh, &g->sw, &g->dh, &g->dw, &g->pt, &g->pl, &g->hp, &g->wp, &g->o,
                          &g->ob, &g->ho, &g->wo, &g->k, &g->cpg, &g->cw, &g->window, &plan->weights, &plan->wsum,
                          &plan->scale, &plan->shift, &slope_obj, &path_name, &call->activation)) {
        free(plan);
        return NULL;
    }
    for (call->path = 0; call->path < PATH_COUNT && strcmp(path_name, PATH_NAMES[call->path]); call->path++) {}
    g->og = g->o / g->groups;
    g->taps = g->window ? g->kh * g->cw : g->kh * g->kw * g->cw;
    g->columns = g->window ? g->wo : g->wp;
    if (slope_obj != Py_None && PyObject_GetBuffer(slope_obj, &plan->slope, PyBUF_SIMPLE) < 0) {
        plan_free(plan);
        return NULL;
    }
    const char *refusal = NULL;
    if (g->window && (g->cpg > 64 || g->cw != (g->kw * g->cpg + 63) / 64))
        refusal = "row windows need fewer than 64 channels per group";
    else if (call->path >= PATH_COUNT || !cpu_has(call->path))
        refusal = "kernel path not available on this CPU";
    if (refusal) {
        PyErr_SetString(PyExc_ValueError, refusal);
        plan_free(plan);
        return NULL;
    }
    call->g = g;
    call->b = plan->weights.buf, call->wsum = plan->wsum.buf;
    call->scale = plan->scale.buf, call->shift = plan->shift.buf;
    call->slope = plan->slope.obj ? plan->slope.buf : NULL;
    if (plan_tables(plan) != 0) {
        plan_free(plan);
        return PyErr_NoMemory();
    }
    PyObject *capsule = PyCapsule_New(plan, PLAN_NAME, plan_capsule_free);
    if (!capsule) plan_free(plan);
    return capsule;
}

/* conv(plan, x, residual, out, integer): x, residual (or None) and out are C-contiguous buffers of
 * the plan's shapes, checked by kernels.py. */
static PyObject *py_conv(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *capsule, *residual_obj;
    Py_buffer x, out, residual = {0};
    int integer;
    if (!PyArg_ParseTuple(args, "Oy*Ow*p", &capsule, &x, &residual_obj, &out, &integer)) return NULL;
    const conv_plan *plan = PyCapsule_GetPointer(capsule, PLAN_NAME);
    int failed = !plan || (residual_obj != Py_None && PyObject_GetBuffer(residual_obj, &residual, PyBUF_SIMPLE) < 0);
    if (!failed) {
        conv_call call = plan->fixed;
        call.x = x.buf, call.out = out.buf, call.integer_output = integer;
        call.residual = residual.obj ? residual.buf : NULL;
        int status;
        Py_BEGIN_ALLOW_THREADS status = run_conv(&call);
        Py_END_ALLOW_THREADS
        if (status != 0) {
            PyErr_NoMemory();
            failed = 1;
        }
    }
    PyBuffer_Release(&x), PyBuffer_Release(&out);
    if (residual.obj) PyBuffer_Release(&residual);
    if (failed) return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"paths", py_paths, METH_NOARGS, "Dispatch paths this CPU can run, best first."},
    {"set_threads", py_set_threads, METH_VARARGS, "Sets the kernel threads; returns the number in use."},
    {"conv_plan", py_conv_plan, METH_VARARGS, "A layer's call plan for one input shape (see kernels.py)."},
    {"conv", py_conv, METH_VARARGS, "Binary convolution by a plan (see kernels.py)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_kernels", "Native binary kernels.", -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__kernels(void) {
    init_spread();
    pthread_atfork(NULL, NULL, pool_after_fork_in_child);
    return PyModule_Create(&module);
}
