// y[B, O] = x[B, I] · Wᵀ for a few rows (1 ≤ B ≤ 64) of fp32 on an AVX-512 CPU: the decode step's products.
//
// The weight is packed once into panels of 32 outputs, P[O/32][I][32] (P[p][i][j] = W[32p + j][i]), so a panel is
// one contiguous stream. For each panel the B×32 outputs stay in 2B zmm registers while the panel streams past
// once; each 32-wide weight slice meets the B activations of its input column, broadcast from xᵀ [I][B]. The
// weight is read from memory once per call whatever B is, with no horizontal sums: a matrix-vector product for
// B = 1, a skinny GEMM at the weights' read bandwidth for more. Up to 12 rows share a pass over a panel (2·12 + 2 of
// the 32 registers); more rows are cut into near-equal tiles of at most 12, each pass after the first reading the
// panel (≤ 300 KB) from the core's cache.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>

namespace {

template <int B>
void tile(const float* panels, const float* xt, float* y, int64_t rows, int64_t in, int64_t out, int64_t p,
          int64_t first) {
  // rows first … first + B - 1 of xᵀ [I][rows] (strided) against panel p
  __m512 lo[B], hi[B];
  for (int b = 0; b < B; ++b) {
    lo[b] = _mm512_setzero_ps();
    hi[b] = _mm512_setzero_ps();
  }
  const float* w = panels + p * in * 32;
  for (int64_t i = 0; i < in; ++i) {
    const __m512 w0 = _mm512_loadu_ps(w + i * 32), w1 = _mm512_loadu_ps(w + i * 32 + 16);
    const float* xi = xt + i * rows + first;
    for (int b = 0; b < B; ++b) {
      const __m512 xv = _mm512_set1_ps(xi[b]);
      lo[b] = _mm512_fmadd_ps(w0, xv, lo[b]);
      hi[b] = _mm512_fmadd_ps(w1, xv, hi[b]);
    }
  }
  for (int b = 0; b < B; ++b) {
    _mm512_storeu_ps(y + (first + b) * out + 32 * p, lo[b]);
    _mm512_storeu_ps(y + (first + b) * out + 32 * p + 16, hi[b]);
  }
}

using Tile = void (*)(const float*, const float*, float*, int64_t, int64_t, int64_t, int64_t, int64_t);
const Tile TILES[] = {tile<1>, tile<2>, tile<3>, tile<4>, tile<5>, tile<6>,
                      tile<7>, tile<8>, tile<9>, tile<10>, tile<11>, tile<12>};
constexpr int64_t MAX_TILE = 12;

}  // namespace

// W [O, I] → P [O/32, I, 32]
torch::Tensor pack(const torch::Tensor& weight) {
  TORCH_CHECK(weight.dim() == 2 && weight.size(0) % 32 == 0 && weight.scalar_type() == torch::kFloat);
  return weight.view({weight.size(0) / 32, 32, weight.size(1)}).transpose(1, 2).contiguous();
}

// x [B, I], P [O/32, I, 32] → y [B, O]
torch::Tensor packed_matmul(const torch::Tensor& x, const torch::Tensor& panels) {
  const int64_t rows = x.size(0), in = x.size(1), out = panels.size(0) * 32;
  TORCH_CHECK(rows >= 1 && panels.size(1) == in && x.scalar_type() == torch::kFloat);
  auto y = torch::empty({rows, out}, x.options());
  const auto xt = x.t().contiguous();
  const float* pp = panels.data_ptr<float>();
  const float* xp = xt.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  const int64_t tiles = (rows + MAX_TILE - 1) / MAX_TILE;
  const int64_t grain = std::max<int64_t>(1, (1 << 18) / (in * 32 * rows));   // small products stay on one thread
  at::parallel_for(0, out / 32, grain, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      for (int64_t t = 0, first = 0; t < tiles; ++t) {
        const int64_t size = (rows - first) / (tiles - t);          // near-equal tiles
        TILES[size - 1](pp, xp, yp, rows, in, out, p, first);
        first += size;
      }
    }
  });
  return y;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("pack", &pack);
  m.def("packed_matmul", &packed_matmul);
}
