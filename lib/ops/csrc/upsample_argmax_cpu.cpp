// Labels of bilinearly upsampled logits, fused on the CPU (torch.ops.davss.upsample_argmax: argmax_c up(L)_c, and
// upsample_merge_argmax: argmax_c up(P)_c * (1 - up(D)) + up(Q)_c * up(D)), with up() the F.interpolate resize whose
// grid lib/infer/labels.py computes. The resized maps are never stored: each output row comes from two cached
// width-interpolated source rows. Float32 in the reference's order (row = s[x0] * (1 - wx) + s[x1] * wx, then
// top * (1 - wy) + bottom * wy), built with -ffp-contract=off so every clone rounds alike; the first maximal class
// wins, as in torch.argmax.
#include <Python.h>
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

extern "C" {
// No Python attributes: the operators are reached through torch.ops.davss.
PyObject* PyInit__upsample_argmax_cpu(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_upsample_argmax_cpu", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

namespace {

// The vector width is picked at load time (GCC function multi-versioning).
#define DAVSS_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))

// Interpolate `channels` planes of one source row along the width: out[c * W + X] for X < W (int32 indices: gathers).
DAVSS_CLONES
void width_row(const float* __restrict__ src, int64_t plane, int64_t channels, const int32_t* __restrict__ x0,
               const int32_t* __restrict__ x1, const float* __restrict__ wx, int64_t W, float* __restrict__ out) {
  for (int64_t c = 0; c < channels; ++c) {
    const float* s = src + c * plane;
    float* o = out + c * W;
    for (int64_t X = 0; X < W; ++X) {
      o[X] = s[x0[X]] * (1.0f - wx[X]) + s[x1[X]] * wx[X];
    }
  }
}

// Keep, per pixel, the larger of `best` and `value` and its class (strict: the first maximal class wins). Selects on
// 32-bit lanes vectorise as blends; a conditional store would become a masked store, slow on AMD CPUs.
inline void keep_larger(const float* __restrict__ value, int32_t c, int64_t W, float* __restrict__ best,
                        int32_t* __restrict__ index) {
  for (int64_t X = 0; X < W; ++X) {
    const float v = value[X], b = best[X];
    const int32_t larger = -static_cast<int32_t>(v > b);  // all bits set where v wins
    best[X] = v > b ? v : b;
    index[X] = (c & larger) | (index[X] & ~larger);
  }
}

// The class of each pixel of one output row, from the width-interpolated rows above (top) and below (bottom)
// whose channels 0..C-1 are the logits; `value` is scratch of W floats.
DAVSS_CLONES
void label_row(const float* __restrict__ top, const float* __restrict__ bottom, float wy, int64_t classes,
               int64_t W, float* __restrict__ best, float* __restrict__ value, int32_t* __restrict__ index,
               int64_t* __restrict__ label) {
  const float uy = 1.0f - wy;
  for (int64_t X = 0; X < W; ++X) {
    best[X] = top[X] * uy + bottom[X] * wy;
    index[X] = 0;
  }
  for (int64_t c = 1; c < classes; ++c) {
    const float* t = top + c * W;
    const float* b = bottom + c * W;
    for (int64_t X = 0; X < W; ++X) value[X] = t[X] * uy + b[X] * wy;
    keep_larger(value, static_cast<int32_t>(c), W, best, index);
  }
  for (int64_t X = 0; X < W; ++X) label[X] = index[X];
}

// The same for the merge: channels 0..C-1 of the rows are P, C..2C-1 are Q and 2C is D; `weight` is scratch too.
DAVSS_CLONES
void merge_label_row(const float* __restrict__ top, const float* __restrict__ bottom, float wy, int64_t classes,
                     int64_t W, float* __restrict__ best, float* __restrict__ value, float* __restrict__ weight,
                     int32_t* __restrict__ index, int64_t* __restrict__ label) {
  const float uy = 1.0f - wy;
  const float* dt = top + 2 * classes * W;
  const float* db = bottom + 2 * classes * W;
  for (int64_t X = 0; X < W; ++X) weight[X] = dt[X] * uy + db[X] * wy;
  for (int64_t c = 0; c < classes; ++c) {
    const float* pt = top + c * W;
    const float* pb = bottom + c * W;
    const float* qt = top + (classes + c) * W;
    const float* qb = bottom + (classes + c) * W;
    float* out = c == 0 ? best : value;
    for (int64_t X = 0; X < W; ++X) {
      const float d = weight[X];
      out[X] = (pt[X] * uy + pb[X] * wy) * (1.0f - d) + (qt[X] * uy + qb[X] * wy) * d;
    }
    if (c == 0) {
      for (int64_t X = 0; X < W; ++X) index[X] = 0;
    } else {
      keep_larger(value, static_cast<int32_t>(c), W, best, index);
    }
  }
  for (int64_t X = 0; X < W; ++X) label[X] = index[X];
}

// maps: (N, K, h, w) float32 contiguous, K = C (plain) or 2C + 1 (merge: P, Q, D stacked).
at::Tensor labels_of_upsampled(const at::Tensor& maps, int64_t classes, bool merge, const at::Tensor& y0,
                               const at::Tensor& y1, const at::Tensor& wy, const at::Tensor& x0,
                               const at::Tensor& x1, const at::Tensor& wx) {
  const int64_t n = maps.size(0), k = maps.size(1), h = maps.size(2), w = maps.size(3);
  const int64_t H = y0.size(0), W = x0.size(0);
  auto out = at::empty({n, H, W}, maps.options().dtype(at::kLong));
  const float* src = maps.data_ptr<float>();
  const int64_t *py0 = y0.data_ptr<int64_t>(), *py1 = y1.data_ptr<int64_t>();
  // Column indices are below w (checked), so they fit int32.
  const std::vector<int32_t> cx0(x0.data_ptr<int64_t>(), x0.data_ptr<int64_t>() + W);
  const std::vector<int32_t> cx1(x1.data_ptr<int64_t>(), x1.data_ptr<int64_t>() + W);
  const int32_t *px0 = cx0.data(), *px1 = cx1.data();
  const float *pwy = wy.data_ptr<float>(), *pwx = wx.data_ptr<float>();
  int64_t* dst = out.data_ptr<int64_t>();
  // Each task keeps the two width-interpolated source rows it last used: consecutive output rows reuse them.
  at::parallel_for(0, n * H, 16, [&](int64_t begin, int64_t end) {
    std::vector<float> rows(2 * k * W), best(W), value(W), weight(W);
    std::vector<int32_t> index(W);
    float* slot[2] = {rows.data(), rows.data() + k * W};
    int64_t held[2] = {-1, -1};  // the (image, source row) each slot holds, as image * h + row
    auto row_for = [&](int64_t image, int64_t r) -> const float* {
      const int64_t id = image * h + r;
      for (int s = 0; s < 2; ++s) {
        if (held[s] == id) return slot[s];
      }
      // Replace the older row: source rows only move down within a task, so it is never the other one needed now.
      const int s = (held[0] < held[1]) ? 0 : 1;
      width_row(src + (image * k * h + r) * w, h * w, k, px0, px1, pwx, W, slot[s]);
      held[s] = id;
      return slot[s];
    };
    for (int64_t row = begin; row < end; ++row) {
      const int64_t image = row / H, Y = row % H;
      const float* top = row_for(image, py0[Y]);
      const float* bottom = row_for(image, py1[Y]);
      if (merge) {
        merge_label_row(top, bottom, pwy[Y], classes, W, best.data(), value.data(), weight.data(), index.data(),
                        dst + row * W);
      } else {
        label_row(top, bottom, pwy[Y], classes, W, best.data(), value.data(), index.data(), dst + row * W);
      }
    }
  });
  return out;
}

void check_grid(const at::Tensor& lower, const at::Tensor& upper, const at::Tensor& weight, int64_t source_size,
                const char* axis) {
  TORCH_CHECK(lower.dim() == 1 && upper.sizes() == lower.sizes() && weight.sizes() == lower.sizes(),
              "upsample_argmax: the ", axis, " indices and weights must be 1-D of one length");
  TORCH_CHECK(lower.scalar_type() == at::kLong && upper.scalar_type() == at::kLong &&
                  weight.scalar_type() == at::kFloat,
              "upsample_argmax: ", axis, " indices must be int64 and weights float32");
  TORCH_CHECK(lower.is_contiguous() && upper.is_contiguous() && weight.is_contiguous(),
              "upsample_argmax: ", axis, " grid must be contiguous");
  TORCH_CHECK(lower.numel() == 0 || (lower.min().item<int64_t>() >= 0 && upper.max().item<int64_t>() < source_size &&
                                      lower.max().item<int64_t>() < source_size && upper.min().item<int64_t>() >= 0),
              "upsample_argmax: ", axis, " source index outside the map");
}

void check_maps(const at::Tensor& maps, const char* name) {
  TORCH_CHECK(maps.device().is_cpu() && maps.scalar_type() == at::kFloat && maps.dim() == 4 && maps.is_contiguous(),
              "upsample_argmax: ", name, " must be a contiguous (N, C, h, w) float32 CPU tensor");
}

at::Tensor upsample_argmax(const at::Tensor& logits, const at::Tensor& y0, const at::Tensor& y1,
                           const at::Tensor& wy, const at::Tensor& x0, const at::Tensor& x1, const at::Tensor& wx) {
  check_maps(logits, "logits");
  TORCH_CHECK(logits.size(1) >= 1, "upsample_argmax: logits need at least one channel");
  check_grid(y0, y1, wy, logits.size(2), "row");
  check_grid(x0, x1, wx, logits.size(3), "column");
  return labels_of_upsampled(logits, logits.size(1), false, y0, y1, wy, x0, x1, wx);
}

at::Tensor upsample_merge_argmax(const at::Tensor& propagated, const at::Tensor& distortion,
                                 const at::Tensor& correction, const at::Tensor& y0, const at::Tensor& y1,
                                 const at::Tensor& wy, const at::Tensor& x0, const at::Tensor& x1,
                                 const at::Tensor& wx) {
  check_maps(propagated, "propagated");
  check_maps(distortion, "distortion");
  check_maps(correction, "correction");
  const int64_t n = propagated.size(0), c = propagated.size(1), h = propagated.size(2), w = propagated.size(3);
  TORCH_CHECK(c >= 1 && correction.sizes() == propagated.sizes() && distortion.sizes() == at::IntArrayRef({n, 1, h, w}),
              "upsample_merge_argmax: propagated and correction must be (N, C, h, w) and distortion (N, 1, h, w)");
  check_grid(y0, y1, wy, h, "row");
  check_grid(x0, x1, wx, w, "column");
  // One (N, 2C + 1, h, w) block so a source row of all three maps is interpolated in one pass.
  const at::Tensor maps = at::cat({propagated, correction, distortion}, 1);
  return labels_of_upsampled(maps, c, true, y0, y1, wy, x0, x1, wx);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(davss, m) {
  m.def("upsample_argmax(Tensor logits, Tensor y0, Tensor y1, Tensor wy, Tensor x0, Tensor x1, Tensor wx) -> Tensor");
  m.def("upsample_merge_argmax(Tensor propagated, Tensor distortion, Tensor correction, Tensor y0, Tensor y1, "
        "Tensor wy, Tensor x0, Tensor x1, Tensor wx) -> Tensor");
}

TORCH_LIBRARY_IMPL(davss, CPU, m) {
  m.impl("upsample_argmax", &upsample_argmax);
  m.impl("upsample_merge_argmax", &upsample_merge_argmax);
}
