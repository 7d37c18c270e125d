// Per-pixel arithmetic of resample2d, shared by the CUDA kernels and a host test (tests/csrc/resample2d_host_test.cpp)
// that g++ compiles without a GPU; no torch or CUDA header. scalar_t is the storage type of the maps (it only needs
// static_cast<acc_t>), acc_t the arithmetic type (float, or double for double maps).
#pragma once

#include <stdint.h>

#include <math.h>

#if defined(__CUDACC__)
#define DAVSS_HD __host__ __device__ __forceinline__
#define DAVSS_UNROLL_4 _Pragma("unroll 4")
#else
#define DAVSS_HD inline
#define DAVSS_UNROLL_4
#endif

namespace davss {
namespace math {

DAVSS_HD float floor_acc(float v) { return floorf(v); }
DAVSS_HD double floor_acc(double v) { return floor(v); }

// Clamping to [-1, size] changes no value or gradient (positions further out read the border) and keeps the
// float -> int conversion in range for huge flows. NaN fails `p >= -1` and becomes -1, like -inf in the PyTorch path.
template <typename acc_t>
DAVSS_HD acc_t clamp_position(acc_t p, int size) {
  return p >= acc_t(-1) ? (p > acc_t(size) ? acc_t(size) : p) : acc_t(-1);
}

DAVSS_HD int clamp_index(int i, int size) { return i < 0 ? 0 : (i > size - 1 ? size - 1 : i); }

// Offset of the dx flow of `pixel` of `batch` in a contiguous (N, 2, H, W) flow (dy: one plane further). 64-bit:
// 2 * H * W passes 2^31 for H * W > 2^30, which the launch admits.
DAVSS_HD int64_t flow_offset(int batch, int64_t pixel, int64_t plane) { return int64_t(batch) * 2 * plane + pixel; }

// Offset of the first plane of channel `channel` of batch `batch` in a contiguous (N, C, H, W) map.
DAVSS_HD int64_t plane_offset(int batch, int channel, int channels, int64_t plane) {
  return (int64_t(batch) * channels + channel) * plane;
}

// The four neighbours of a sample position, each clamped to the map (as the original kernel), and its fractional
// parts alpha (x) and beta (y). Corner offsets are inside one plane: int suffices (the launch checks H * W).
template <typename acc_t>
struct BilinearTap {
  int top_left, top_right, bottom_left, bottom_right;
  acc_t alpha, beta;

  DAVSS_HD BilinearTap(acc_t xf, acc_t yf, int height, int width) {
    xf = clamp_position(xf, width);
    yf = clamp_position(yf, height);
    const acc_t x_floor = floor_acc(xf);
    const acc_t y_floor = floor_acc(yf);
    alpha = xf - x_floor;
    beta = yf - y_floor;
    const int x0 = static_cast<int>(x_floor);
    const int y0 = static_cast<int>(y_floor);
    const int left = clamp_index(x0, width);
    const int right = clamp_index(x0 + 1, width);
    const int top = clamp_index(y0, height) * width;
    const int bottom = clamp_index(y0 + 1, height) * width;
    top_left = top + left;
    top_right = top + right;
    bottom_left = bottom + left;
    bottom_right = bottom + right;
  }

  // Bilinear weights of the four corners.
  DAVSS_HD acc_t w_top_left() const { return (acc_t(1) - alpha) * (acc_t(1) - beta); }
  DAVSS_HD acc_t w_top_right() const { return alpha * (acc_t(1) - beta); }
  DAVSS_HD acc_t w_bottom_left() const { return (acc_t(1) - alpha) * beta; }
  DAVSS_HD acc_t w_bottom_right() const { return alpha * beta; }
};

// The tap of output pixel (pixel % width, pixel / width) of `batch`, from a contiguous (N, 2, H, W) acc_t flow.
template <typename acc_t>
DAVSS_HD BilinearTap<acc_t> tap_at(const acc_t* flow, int batch, int pixel, int height, int width) {
  const int64_t plane = int64_t(height) * width;
  const int64_t offset = flow_offset(batch, pixel, plane);
  const int y = pixel / width;
  const int x = pixel - y * width;
  return BilinearTap<acc_t>(acc_t(x) + flow[offset], acc_t(y) + flow[offset + plane], height, width);
}

// Forward value of one channel: `in` is that channel's (H, W) plane.
template <typename scalar_t, typename acc_t>
DAVSS_HD acc_t sample(const scalar_t* in, const BilinearTap<acc_t>& tap) {
  return tap.w_top_left() * static_cast<acc_t>(in[tap.top_left]) +
         tap.w_top_right() * static_cast<acc_t>(in[tap.top_right]) +
         tap.w_bottom_left() * static_cast<acc_t>(in[tap.bottom_left]) +
         tap.w_bottom_right() * static_cast<acc_t>(in[tap.bottom_right]);
}

// Scatter of one channel's output gradient g to the four corners of its grad_input plane with `add` (atomicAdd).
template <typename acc_t, typename Add>
DAVSS_HD void scatter_grad_input(acc_t* grad_in, const BilinearTap<acc_t>& tap, acc_t g, Add add) {
  add(grad_in + tap.top_left, tap.w_top_left() * g);
  add(grad_in + tap.top_right, tap.w_top_right() * g);
  add(grad_in + tap.bottom_left, tap.w_bottom_left() * g);
  add(grad_in + tap.bottom_right, tap.w_bottom_right() * g);
}

// One channel's g * d(out)/d(alpha), g * d(out)/d(beta); corners clamped onto one pixel give 0, the clamp's derivative.
template <typename scalar_t, typename acc_t>
DAVSS_HD void add_grad_flow(const scalar_t* in, const BilinearTap<acc_t>& tap, acc_t g, acc_t& grad_x,
                            acc_t& grad_y) {
  const acc_t v_tl = static_cast<acc_t>(in[tap.top_left]);
  const acc_t v_tr = static_cast<acc_t>(in[tap.top_right]);
  const acc_t v_bl = static_cast<acc_t>(in[tap.bottom_left]);
  const acc_t v_br = static_cast<acc_t>(in[tap.bottom_right]);
  grad_x += g * ((acc_t(1) - tap.beta) * (v_tr - v_tl) + tap.beta * (v_br - v_bl));
  grad_y += g * ((acc_t(1) - tap.alpha) * (v_bl - v_tl) + tap.alpha * (v_br - v_tr));
}

// Forward pass of one pixel over channels [channel_begin, channel_end): what one CUDA thread does.
template <typename scalar_t, typename acc_t>
DAVSS_HD void forward_pixel(const scalar_t* input, const acc_t* flow, scalar_t* output, int batch, int pixel,
                            int channel_begin, int channel_end, int channels, int height, int width) {
  const int64_t plane = int64_t(height) * width;
  const BilinearTap<acc_t> tap = tap_at(flow, batch, pixel, height, width);
  const int64_t first = plane_offset(batch, channel_begin, channels, plane);
  const scalar_t* in = input + first;
  scalar_t* out = output + first + pixel;
  DAVSS_UNROLL_4
  for (int c = channel_begin; c < channel_end; ++c, in += plane, out += plane) {
    *out = static_cast<scalar_t>(sample(in, tap));
  }
}

// Backward pass of one pixel over channels [channel_begin, channel_end): scatters into grad_input (when not
// null) with `add`; returns this run's flow-gradient sums in grad_x / grad_y for the caller to store or add.
template <typename scalar_t, typename acc_t, typename Add>
DAVSS_HD void backward_pixel(const scalar_t* grad_output, const scalar_t* input, const acc_t* flow,
                             acc_t* grad_input, bool want_grad_flow, int batch, int pixel, int channel_begin,
                             int channel_end, int channels, int height, int width, Add add, acc_t& grad_x,
                             acc_t& grad_y) {
  const int64_t plane = int64_t(height) * width;
  const BilinearTap<acc_t> tap = tap_at(flow, batch, pixel, height, width);
  const int64_t first = plane_offset(batch, channel_begin, channels, plane);
  const scalar_t* in = input + first;
  const scalar_t* grad_out = grad_output + first + pixel;
  acc_t* grad_in = grad_input == nullptr ? nullptr : grad_input + first;
  grad_x = acc_t(0);
  grad_y = acc_t(0);
  for (int c = channel_begin; c < channel_end; ++c, in += plane, grad_out += plane) {
    const acc_t g = static_cast<acc_t>(*grad_out);
    if (grad_in != nullptr) {
      scatter_grad_input(grad_in, tap, g, add);
      grad_in += plane;
    }
    if (want_grad_flow) add_grad_flow(in, tap, g, grad_x, grad_y);
  }
}

}  // namespace math
}  // namespace davss
