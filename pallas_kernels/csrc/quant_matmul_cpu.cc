// W8A16 / W4A16 matmul for the CPU as an XLA FFI custom call: y[M, N] = x[M, K] @ W_hat[N, K]^T.
//
// The integer codes are converted to float inside the dot-product loop, one weight row at a
// time, so no dequantized copy of the weight matrix ever exists (GLM-130B §5: weight-only
// quantization; decode at batch 1 is bound by reading the weights, which INT4 cuts 8x).
// Formats are those of pallas_kernels/int_quant.py: INT8 signed codes [N, K]; INT4 packed two per
// byte along K, byte_k = (q_2k << 4) | (q_2k+1 & 0xF), signed nibbles (absmax) or unsigned with a
// zero point; one scale (and zero) per `group_size` inputs of a row. The per-group scale is
// applied to the group's partial sum:  y = sum_g s_g * (sum_{k in g} x_k q_k - z_g sum_{k in g} x_k).
#include <algorithm>
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

template <int kBits, bool kZeroPoint>
void Rows(const Problem& p, int64_t n0, int64_t n1) {
  const int64_t row_bytes = kBits == 8 ? p.K : p.K / 2;
  const int64_t gb = kBits == 8 ? p.g : p.g / 2;   // bytes per group
  for (int64_t n = n0; n < n1; ++n) {
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
          for (int64_t j = 0; j < gb; ++j) {
            float hi, lo;
            if constexpr (kZeroPoint) {
              hi = static_cast<float>(qg[j] >> 4);
              lo = static_cast<float>(qg[j] & 0xF);
            } else {
              const int8_t b = static_cast<int8_t>(qg[j]);
              hi = static_cast<float>(b >> 4);                                    // arithmetic shift
              lo = static_cast<float>(static_cast<int8_t>(static_cast<uint8_t>(qg[j] << 4)) >> 4);
            }
            acc += xe[j] * hi + xo[j] * lo;
          }
        }
        const int64_t sg = n * p.G + gi;
        if constexpr (kZeroPoint) acc -= p.z[sg] * p.xsum[m * p.G + gi];
        out += p.s[sg] * acc;
      }
      p.y[m * p.N + n] = out;
    }
  }
}

using RowsFn = void (*)(const Problem&, int64_t, int64_t);

// Splits the output rows over XLA's intra-op thread pool; the calling thread takes one share.
void ParallelRows(ffi::ThreadPool& pool, RowsFn fn, const Problem& p) {
  const int64_t work = p.M * p.N * p.K;
  int64_t threads = std::max<int64_t>(1, pool.num_threads());
  if (work < (int64_t{1} << 20)) threads = 1;
  threads = std::min(threads, p.N);
  const int64_t chunk = (p.N + threads - 1) / threads;
  std::mutex mu;
  std::condition_variable cv;
  int64_t pending = 0;
  for (int64_t t = 1; t < threads; ++t) {
    const int64_t n0 = t * chunk, n1 = std::min(p.N, n0 + chunk);
    if (n0 >= n1) break;
    {
      std::lock_guard<std::mutex> lock(mu);
      ++pending;
    }
    pool.Schedule([&, n0, n1] {
      fn(p, n0, n1);
      std::lock_guard<std::mutex> lock(mu);
      if (--pending == 0) cv.notify_all();
    });
  }
  fn(p, 0, std::min(p.N, chunk));
  std::unique_lock<std::mutex> lock(mu);
  cv.wait(lock, [&] { return pending == 0; });
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
  ParallelRows(pool, fn, p);
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
