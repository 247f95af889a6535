/* Phase 1 of a fused Ada2MS step on the CPU: the sum of squares of every gradient of a bucket,
 * folded into each parameter's running sum of v,
 *
 *     sums[k] <- lerp(sums[k], sum(x_k^2), weight),   weight = 1 - beta2,
 *
 * in one parallel pass over all the tensors (see analysis_lib/optim/_native.py).
 *
 * Why a kernel of its own: one compiled reduction per tensor pays a parallel region and a call
 * per tensor, and a thread that reads one stream at a time does not keep enough loads in flight
 * to reach the memory bandwidth that the update pass (four streams) reaches. Here the elements
 * of all tensors are cut into segments, each thread takes a contiguous run of segments, and reads
 * four segments side by side.
 *
 * Accuracy: squares are accumulated in the input's precision in LANES independent lanes over at
 * most BLOCK elements per stream, and every block is folded into a double, so a float32 sum
 * carries a relative error of about 1e-7 at most, at any length.
 *
 * Determinism: each thread sums its segments in order into its own row of partial sums, and the
 * rows are added in thread order, so for a given thread count the result is bit-reproducible.
 */
#include <stdint.h>
#include <stdlib.h>
#include <omp.h>

#define LANES 32    /* independent accumulators per stream (vectorised over j) */
#define BLOCK 1024  /* elements per stream between two folds into a double */
#define SEG 16384   /* elements per segment */

#if defined(__x86_64__) && defined(__GNUC__)
#define CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CLONES
#endif

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* sum_squares_1_T(x, n): sum of x[i]^2 over n elements of one stream.
 * sum_squares_4_T(x, n, out): the same for four streams of n elements read side by side,
 * added to out[0..3]. */
#define DEFINE_SUM_SQUARES(T, SUFFIX)                                                           \
    CLONES static double sum_squares_1_##SUFFIX(const T *x, int64_t n) {                      \
        double s = 0.0;                                                                        \
        for (int64_t b = 0; b < n; b += BLOCK) {                                               \
            const T *y = x + b;                                                                \
            int64_t m = min64(n - b, BLOCK), i = 0;                                            \
            T acc[LANES] = {0};                                                                \
            for (; i + LANES <= m; i += LANES)                                                 \
                for (int j = 0; j < LANES; ++j) acc[j] += y[i + j] * y[i + j];                \
            for (int j = 0; j < LANES; ++j) s += acc[j];                                       \
            for (; i < m; ++i) s += (double)y[i] * y[i];                                       \
        }                                                                                      \
        return s;                                                                              \
    }                                                                                          \
    CLONES static void sum_squares_4_##SUFFIX(const T *x0, const T *x1, const T *x2,          \
                                              const T *x3, int64_t n, double *out) {          \
        for (int64_t b = 0; b < n; b += BLOCK) {                                               \
            int64_t m = min64(n - b, BLOCK), i = 0;                                            \
            T a0[LANES] = {0}, a1[LANES] = {0}, a2[LANES] = {0}, a3[LANES] = {0};              \
            for (; i + LANES <= m; i += LANES)                                                 \
                for (int j = 0; j < LANES; ++j) {                                              \
                    a0[j] += x0[b + i + j] * x0[b + i + j];                                   \
                    a1[j] += x1[b + i + j] * x1[b + i + j];                                   \
                    a2[j] += x2[b + i + j] * x2[b + i + j];                                   \
                    a3[j] += x3[b + i + j] * x3[b + i + j];                                   \
                }                                                                              \
            for (int j = 0; j < LANES; ++j) {                                                  \
                out[0] += a0[j];                                                               \
                out[1] += a1[j];                                                               \
                out[2] += a2[j];                                                               \
                out[3] += a3[j];                                                               \
            }                                                                                  \
            for (; i < m; ++i) {                                                               \
                out[0] += (double)x0[b + i] * x0[b + i];                                       \
                out[1] += (double)x1[b + i] * x1[b + i];                                       \
                out[2] += (double)x2[b + i] * x2[b + i];                                       \
                out[3] += (double)x3[b + i] * x3[b + i];                                       \
            }                                                                                  \
        }                                                                                      \
    }                                                                                          \
                                                                                               \
    /* One thread's share: segments [lo, hi) of the bucket, summed into partial[0..n). */      \
    static void thread_share_##SUFFIX(int64_t n, const T *const *x, const int64_t *numel,      \
                                      int64_t lo, int64_t hi, double *partial) {              \
        const T *queue[4];                                                                     \
        int64_t owner[4];                                                                      \
        int q = 0;                                                                             \
        int64_t seg = 0;                                                                       \
        for (int64_t k = 0; k < n && seg < hi; ++k) {                                          \
            for (int64_t off = 0; off < numel[k] && seg < hi; off += SEG, ++seg) {             \
                if (seg < lo) continue;                                                        \
                int64_t len = min64(numel[k] - off, SEG);                                      \
                if (len < SEG) { /* a tensor's last, short segment: on its own */              \
                    partial[k] += sum_squares_1_##SUFFIX(x[k] + off, len);                     \
                    continue;                                                                  \
                }                                                                              \
                queue[q] = x[k] + off;                                                         \
                owner[q++] = k;                                                                \
                if (q == 4) {                                                                  \
                    double out[4] = {0.0, 0.0, 0.0, 0.0};                                      \
                    sum_squares_4_##SUFFIX(queue[0], queue[1], queue[2], queue[3], SEG, out); \
                    for (int j = 0; j < 4; ++j) partial[owner[j]] += out[j];                   \
                    q = 0;                                                                     \
                }                                                                              \
            }                                                                                  \
        }                                                                                      \
        for (int j = 0; j < q; ++j) partial[owner[j]] += sum_squares_1_##SUFFIX(queue[j], SEG); \
    }                                                                                          \
                                                                                               \
    int ada2ms_square_sums_##SUFFIX(int64_t n, const T *const *x, const int64_t *numel,        \
                                    double *const *sums, double weight, int threads) {        \
        int64_t segments = 0;                                                                  \
        for (int64_t k = 0; k < n; ++k) segments += (numel[k] + SEG - 1) / SEG;                \
        if (threads < 1) threads = 1;                                                          \
        if (threads > segments) threads = segments > 0 ? (int)segments : 1;                    \
        double *partial = calloc((size_t)threads * (size_t)(n > 0 ? n : 1), sizeof(double));   \
        if (!partial) return 1;                                                                \
        _Pragma("omp parallel num_threads(threads) if (threads > 1)")                          \
        {                                                                                      \
            int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();                      \
            thread_share_##SUFFIX(n, x, numel, segments * t / nt, segments * (t + 1) / nt,     \
                                  partial + t * n);                                            \
        }                                                                                      \
        for (int64_t k = 0; k < n; ++k) {                                                      \
            double sq = 0.0, s = *sums[k];                                                     \
            for (int t = 0; t < threads; ++t) sq += partial[t * n + k];                        \
            /* torch's lerp, so that every path advances the sums alike */                     \
            *sums[k] = weight < 0.5 ? s + weight * (sq - s) : sq - (sq - s) * (1.0 - weight);  \
        }                                                                                      \
        free(partial);                                                                         \
        return 0;                                                                              \
    }

DEFINE_SUM_SQUARES(float, f32)
DEFINE_SUM_SQUARES(double, f64)
