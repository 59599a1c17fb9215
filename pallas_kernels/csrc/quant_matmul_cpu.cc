// The CPU decode matmuls as XLA FFI custom calls:
//   JaxpapersQuantMatmulF32  W8A16 / W4A16, y[M, N] = x[M, K] @ W_hat[N, K]^T;
//   JaxpapersF32Matmul       FP32, y[M, N] = x[M, K] @ w[K, N] for few rows (the like-for-like
//                            baseline of decode: the same threads, the weight read once).
//
// The integer codes are converted to float inside the dot-product loop (four weight rows at a
// time with AVX-512 where the CPU has it), so no dequantized copy of the weight matrix ever exists
// (GLM-130B §5: weight-only quantization; decode at batch 1 is bound by reading the weights, which
// INT4 cuts 8x).
// Formats are those of pallas_kernels/int_quant.py: INT8 signed codes [N, K]; INT4 packed two per
// byte along K, byte_k = (q_2k << 4) | (q_2k+1 & 0xF), signed nibbles (absmax) or unsigned with a
// zero point; one scale (and zero) per `group_size` inputs of a row. The per-group scale is
// applied to the group's partial sum:  y = sum_g s_g * (sum_{k in g} x_k q_k - z_g sum_{k in g} x_k).
#include <algorithm>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

struct Problem {
  const float* x;      // [M, K]
  const float* xe;     // [M, K/2] even inputs (INT4 only)
  const float* xo;     // [M, K/2] odd inputs (INT4 only)
  const float* xsum;   // [M, G] per-group input sums (zero point only)
  const uint8_t* q;    // [N, K] int8 or [N, K/2] packed
  const float* s;      // [N, G]
  const float* z;      // [N, G] (zero point only)
  float* y;            // [M, N]
  int64_t M, N, K, G, g;
};

template <bool kZeroPoint>
inline float HiNibble(uint8_t byte) {
  if constexpr (kZeroPoint) return static_cast<float>(byte >> 4);
  return static_cast<float>(static_cast<int8_t>(byte) >> 4);                       // arithmetic shift
}

template <bool kZeroPoint>
inline float LoNibble(uint8_t byte) {
  if constexpr (kZeroPoint) return static_cast<float>(byte & 0xF);
  return static_cast<float>(static_cast<int8_t>(static_cast<uint8_t>(byte << 4)) >> 4);
}

// One output row n for every activation row m: the portable loop (any CPU; the compiler
// vectorises the inner products with the relaxations of FLAGS).
template <int kBits, bool kZeroPoint>
void RowScalar(const Problem& p, int64_t n) {
  const int64_t row_bytes = kBits == 8 ? p.K : p.K / 2;
  const int64_t gb = kBits == 8 ? p.g : p.g / 2;   // bytes per group
  const uint8_t* qr = p.q + n * row_bytes;
  for (int64_t m = 0; m < p.M; ++m) {
    float out = 0.f;
    for (int64_t gi = 0; gi < p.G; ++gi) {
      float acc = 0.f;
      if constexpr (kBits == 8) {
        const int8_t* qg = reinterpret_cast<const int8_t*>(qr) + gi * gb;
        const float* xg = p.x + m * p.K + gi * p.g;
        for (int64_t j = 0; j < gb; ++j) acc += xg[j] * static_cast<float>(qg[j]);
      } else {
        const uint8_t* qg = qr + gi * gb;
        const float* xe = p.xe + m * (p.K / 2) + gi * gb;
        const float* xo = p.xo + m * (p.K / 2) + gi * gb;
        for (int64_t j = 0; j < gb; ++j) acc += xe[j] * HiNibble<kZeroPoint>(qg[j]) +
                                                xo[j] * LoNibble<kZeroPoint>(qg[j]);
      }
      const int64_t sg = n * p.G + gi;
      if constexpr (kZeroPoint) acc -= p.z[sg] * p.xsum[m * p.G + gi];
      out += p.s[sg] * acc;
    }
    p.y[m * p.N + n] = out;
  }
}

#if defined(__AVX512F__)
// kR output rows at once with AVX-512: kR independent accumulator chains (one chain is bound by
// the FMA latency, not by the loads) sharing each load of the activations. 16 codes per step
// (INT8) or 16 packed bytes = 32 codes (INT4: even/odd activations, one accumulator each).
template <int kBits, bool kZeroPoint, int kR>
void RowsAvx512(const Problem& p, int64_t n) {
  const int64_t row_bytes = kBits == 8 ? p.K : p.K / 2;
  const int64_t gb = kBits == 8 ? p.g : p.g / 2;
  const int64_t vec_end = gb - gb % 16;
  for (int64_t m = 0; m < p.M; ++m) {
    // sum_g s_g * (group g's products) kept as vectors, reduced once per row; the scalar part
    // holds the tails and the zero-point corrections
    __m512 total[kR];
    float out[kR] = {};
    for (int r = 0; r < kR; ++r) total[r] = _mm512_setzero_ps();
    for (int64_t gi = 0; gi < p.G; ++gi) {
      __m512 acc[kR], acc2[kR];
      for (int r = 0; r < kR; ++r) acc[r] = acc2[r] = _mm512_setzero_ps();
      const uint8_t* qg[kR];
      for (int r = 0; r < kR; ++r) qg[r] = p.q + (n + r) * row_bytes + gi * gb;
      float tail[kR] = {};
      if constexpr (kBits == 8) {
        const float* xg = p.x + m * p.K + gi * p.g;
        for (int64_t j = 0; j < vec_end; j += 16) {
          const __m512 xv = _mm512_loadu_ps(xg + j);
          for (int r = 0; r < kR; ++r) {
            const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qg[r] + j));
            acc[r] = _mm512_fmadd_ps(xv, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b)), acc[r]);
          }
        }
        for (int r = 0; r < kR; ++r)
          for (int64_t j = vec_end; j < gb; ++j)
            tail[r] += xg[j] * static_cast<float>(static_cast<int8_t>(qg[r][j]));
      } else {
        const float* xe = p.xe + m * (p.K / 2) + gi * gb;
        const float* xo = p.xo + m * (p.K / 2) + gi * gb;
        // a nibble's value by table lookup: vpermps reads the low 4 bits of each index, so the
        // low nibble needs no mask and neither needs an int -> float conversion
        alignas(64) float table[16];
        for (int i = 0; i < 16; ++i) table[i] = static_cast<float>(kZeroPoint || i < 8 ? i : i - 16);
        const __m512 values = _mm512_load_ps(table);
        for (int64_t j = 0; j < vec_end; j += 16) {
          const __m512 ev = _mm512_loadu_ps(xe + j), ov = _mm512_loadu_ps(xo + j);
          for (int r = 0; r < kR; ++r) {
            const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qg[r] + j));
            const __m512i v = _mm512_cvtepu8_epi32(b);
            const __m512 hi = _mm512_permutexvar_ps(_mm512_srli_epi32(v, 4), values);
            const __m512 lo = _mm512_permutexvar_ps(v, values);
            acc[r] = _mm512_fmadd_ps(ev, hi, acc[r]);
            acc2[r] = _mm512_fmadd_ps(ov, lo, acc2[r]);
          }
        }
        for (int r = 0; r < kR; ++r)
          for (int64_t j = vec_end; j < gb; ++j)
            tail[r] += xe[j] * HiNibble<kZeroPoint>(qg[r][j]) + xo[j] * LoNibble<kZeroPoint>(qg[r][j]);
      }
      for (int r = 0; r < kR; ++r) {
        const int64_t sg = (n + r) * p.G + gi;
        total[r] = _mm512_fmadd_ps(_mm512_set1_ps(p.s[sg]), _mm512_add_ps(acc[r], acc2[r]), total[r]);
        float a = tail[r];
        if constexpr (kZeroPoint) a -= p.z[sg] * p.xsum[m * p.G + gi];
        out[r] += p.s[sg] * a;
      }
    }
    for (int r = 0; r < kR; ++r) p.y[m * p.N + n + r] = _mm512_reduce_add_ps(total[r]) + out[r];
  }
}
#endif

template <int kBits, bool kZeroPoint>
void Rows(const Problem& p, int64_t n0, int64_t n1) {
  int64_t n = n0;
#if defined(__AVX512F__)
  for (; n + 4 <= n1; n += 4) RowsAvx512<kBits, kZeroPoint, 4>(p, n);
#endif
  for (; n < n1; ++n) RowScalar<kBits, kZeroPoint>(p, n);
}

using RowsFn = void (*)(const Problem&, int64_t, int64_t);

// Splits [0, N) into one range per thread of XLA's intra-op pool (range starts multiples of
// `align`), runs fn(n0, n1) on each, the calling thread taking the first; small problems (`work`
// multiply-adds) run on the calling thread alone.
template <class Fn>
void ParallelFor(ffi::ThreadPool& pool, int64_t N, int64_t work, int64_t align, Fn fn) {
  int64_t threads = std::max<int64_t>(1, pool.num_threads());
  if (work < (int64_t{1} << 20)) threads = 1;
  threads = std::max<int64_t>(1, std::min(threads, N / align));
  const int64_t chunk = ((N + threads - 1) / threads + align - 1) / align * align;
  std::mutex mu;
  std::condition_variable cv;
  int64_t pending = 0;
  for (int64_t t = 1; t < threads; ++t) {
    const int64_t n0 = t * chunk, n1 = std::min(N, n0 + chunk);
    if (n0 >= n1) break;
    {
      std::lock_guard<std::mutex> lock(mu);
      ++pending;
    }
    pool.Schedule([&, n0, n1] {
      fn(n0, n1);
      std::lock_guard<std::mutex> lock(mu);
      if (--pending == 0) cv.notify_all();
    });
  }
  fn(0, std::min(N, chunk));
  std::unique_lock<std::mutex> lock(mu);
  cv.wait(lock, [&] { return pending == 0; });
}

// FP32 y[M, N] = x[M, K] @ w[K, N] for few rows M (decode): the weight is read once, row by row,
// in column tiles whose partial sums (every row m's) stay in the L1 cache, four weight rows per
// pass over the tile. The inner loop has no reduction, so it vectorises without reassociation.
constexpr int64_t kTile = 8192;   // floats of partial sums per tile, all rows together

void F32Cols(const float* __restrict x, const float* __restrict w, float* __restrict y,
             int64_t M, int64_t K, int64_t N, int64_t n0, int64_t n1) {
  const int64_t width = std::max<int64_t>(64, kTile / std::max<int64_t>(M, 1) / 16 * 16);
  std::vector<float> acc_buf(M * width);
  float* __restrict acc = acc_buf.data();
  for (int64_t t0 = n0; t0 < n1; t0 += width) {
    const int64_t tn = std::min(width, n1 - t0);
    std::fill(acc, acc + M * width, 0.f);
    int64_t k = 0;
    for (; k + 4 <= K; k += 4) {
      const float* __restrict w0 = w + k * N + t0;
      const float* __restrict w1 = w0 + N;
      const float* __restrict w2 = w1 + N;
      const float* __restrict w3 = w2 + N;
      for (int64_t m = 0; m < M; ++m) {
        const float* xm = x + m * K + k;
        const float a0 = xm[0], a1 = xm[1], a2 = xm[2], a3 = xm[3];
        float* __restrict am = acc + m * width;
        for (int64_t j = 0; j < tn; ++j) am[j] += a0 * w0[j] + a1 * w1[j] + a2 * w2[j] + a3 * w3[j];
      }
    }
    for (; k < K; ++k) {
      const float* __restrict wk = w + k * N + t0;
      for (int64_t m = 0; m < M; ++m) {
        const float a = x[m * K + k];
        float* __restrict am = acc + m * width;
        for (int64_t j = 0; j < tn; ++j) am[j] += a * wk[j];
      }
    }
    for (int64_t m = 0; m < M; ++m)
      std::copy(acc + m * width, acc + m * width + tn, y + m * N + t0);
  }
}

ffi::Error F32MatmulImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w,
                         ffi::ResultBuffer<ffi::F32> y) {
  const auto xd = x.dimensions();
  const auto wd = w.dimensions();
  if (xd.size() != 2 || wd.size() != 2 || xd[1] != wd[0]) {
    return ffi::Error::InvalidArgument("f32_matmul_cpu: expected x [M, K] and w [K, N]");
  }
  const int64_t M = xd[0], K = xd[1], N = wd[1];
  const float* xp = x.typed_data();
  const float* wp = w.typed_data();
  float* yp = y->typed_data();
  ParallelFor(pool, N, M * N * K, 16,
              [&](int64_t n0, int64_t n1) { F32Cols(xp, wp, yp, M, K, N, n0, n1); });
  return ffi::Error::Success();
}

ffi::Error QuantMatmulImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::AnyBuffer q,
                           ffi::Buffer<ffi::F32> scale, ffi::Buffer<ffi::F32> zero,
                           ffi::ResultBuffer<ffi::F32> y, int64_t bits, int64_t group_size,
                           int64_t zero_point) {
  const auto xd = x.dimensions();
  const auto sd = scale.dimensions();
  if (xd.size() != 2 || sd.size() != 2) {
    return ffi::Error::InvalidArgument("quant_matmul_cpu: x and scale must be rank 2");
  }
  Problem p{};
  p.M = xd[0];
  p.K = xd[1];
  p.N = sd[0];
  p.G = sd[1];
  p.g = group_size;
  if (p.G * p.g != p.K) return ffi::Error::InvalidArgument("quant_matmul_cpu: K != groups * group_size");
  if (bits != 4 && bits != 8) return ffi::Error::InvalidArgument("quant_matmul_cpu: bits must be 4 or 8");
  const int64_t row_bytes = bits == 8 ? p.K : p.K / 2;
  if (static_cast<int64_t>(q.element_count()) != p.N * row_bytes) {
    return ffi::Error::InvalidArgument("quant_matmul_cpu: code array does not match [N, K] / packing");
  }
  p.x = x.typed_data();
  p.q = static_cast<const uint8_t*>(q.untyped_data());
  p.s = scale.typed_data();
  p.z = zero.typed_data();
  p.y = y->typed_data();
  std::vector<float> xe, xo, xsum;
  if (bits == 4) {
    xe.resize(p.M * p.K / 2);
    xo.resize(p.M * p.K / 2);
    for (int64_t i = 0; i < p.M * p.K / 2; ++i) {
      xe[i] = p.x[2 * i];
      xo[i] = p.x[2 * i + 1];
    }
    p.xe = xe.data();
    p.xo = xo.data();
  }
  if (zero_point) {
    xsum.assign(p.M * p.G, 0.f);
    for (int64_t m = 0; m < p.M; ++m)
      for (int64_t k = 0; k < p.K; ++k) xsum[m * p.G + k / p.g] += p.x[m * p.K + k];
    p.xsum = xsum.data();
  }
  RowsFn fn = bits == 8 ? (zero_point ? &Rows<8, true> : &Rows<8, false>)
                        : (zero_point ? &Rows<4, true> : &Rows<4, false>);
  ParallelFor(pool, p.N, p.M * p.N * p.K, 4, [&](int64_t n0, int64_t n1) { fn(p, n0, n1); });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxpapersQuantMatmulF32, QuantMatmulImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("bits")
                                  .Attr<int64_t>("group_size")
                                  .Attr<int64_t>("zero_point"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxpapersF32Matmul, F32MatmulImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
