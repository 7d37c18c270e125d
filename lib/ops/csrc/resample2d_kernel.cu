// CUDA kernels of resample2d (see resample2d.h and docs/resample2d.md).
//
// Layout of the work: one thread owns one output pixel (b, y, x) and a run of consecutive channels. The flow at
// the pixel, the four clamped corner offsets and the bilinear weights are computed once and reused for every
// channel of the run, so the flow is read once per pixel and run instead of once per element. Consecutive
// threads own consecutive x, so reads of grad_output and writes of the output are coalesced, and the corner
// gathers of neighbouring threads share cache lines whenever the flow is smooth.
//
// Arithmetic is done in at::acc_type (float for half, bfloat16 and float; double for double); the flow is
// converted to that type on the host, so low-precision inputs never round sample positions.
#include <ATen/ATen.h>
#include <ATen/AccumulateType.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <climits>

#include "resample2d.h"

namespace davss {
namespace {

constexpr int kThreadsPerBlock = 256;
// Resident threads per SM on sm_80 / sm_90 (2048); used only to size the launch, so an estimate is enough.
constexpr int64_t kThreadsPerSm = 2048;
// Max gridDim.y / gridDim.z.
constexpr int64_t kMaxGridYZ = 65535;

// Positions more than one pixel outside the map read the border pixel whatever their exact value, so clamping
// them to [-1, size] first changes no result (and no gradient: both corners then coincide) while keeping the
// float -> int conversion in range for huge flows. Comparisons rather than fmin/fmax so that a NaN flow stays
// NaN (and gives a NaN output) instead of silently turning into a border read.
template <typename acc_t>
__device__ __forceinline__ acc_t clamp_position(acc_t p, int size) {
  return p < acc_t(-1) ? acc_t(-1) : (p > acc_t(size) ? acc_t(size) : p);
}

__device__ __forceinline__ int clamp_index(int i, int size) { return max(0, min(i, size - 1)); }

// The four neighbours of a sample position, each clamped to the map independently (as the original kernel
// does), and the fractional parts alpha (along x) and beta (along y) of the position.
template <typename acc_t>
struct BilinearTap {
  int top_left, top_right, bottom_left, bottom_right;  // offsets inside one (H, W) plane
  acc_t alpha, beta;

  __device__ __forceinline__ BilinearTap(acc_t xf, acc_t yf, int height, int width) {
    xf = clamp_position(xf, width);
    yf = clamp_position(yf, height);
    const acc_t x_floor = floor(xf);
    const acc_t y_floor = floor(yf);
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
};

// Work split shared by both kernels: pixel index inside the plane, batch index and channel range.
struct ThreadWork {
  int pixel, x, y, batch, channel_begin, channel_end;

  __device__ __forceinline__ ThreadWork(int channels, int height, int width, int channels_per_run) {
    pixel = static_cast<int>(static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x);
    y = pixel / width;
    x = pixel - y * width;
    batch = blockIdx.z;
    channel_begin = blockIdx.y * channels_per_run;
    channel_end = min(channel_begin + channels_per_run, channels);
  }
};

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreadsPerBlock)
    resample2d_forward_kernel(const scalar_t* __restrict__ input,  // (N, C, H, W)
                              const acc_t* __restrict__ flow,      // (N, 2, H, W)
                              scalar_t* __restrict__ output,       // (N, C, H, W)
                              int channels, int height, int width, int channels_per_run) {
  const int plane = height * width;
  const ThreadWork work(channels, height, width, channels_per_run);
  if (work.pixel >= plane) return;

  const acc_t* flow_b = flow + static_cast<int64_t>(work.batch) * 2 * plane;
  const BilinearTap<acc_t> tap(work.x + flow_b[work.pixel], work.y + flow_b[plane + work.pixel], height, width);
  const acc_t w_tl = (1 - tap.alpha) * (1 - tap.beta);
  const acc_t w_tr = tap.alpha * (1 - tap.beta);
  const acc_t w_bl = (1 - tap.alpha) * tap.beta;
  const acc_t w_br = tap.alpha * tap.beta;

  const int64_t first = (static_cast<int64_t>(work.batch) * channels + work.channel_begin) * plane;
  const scalar_t* in = input + first;
  scalar_t* out = output + first + work.pixel;
#pragma unroll 4
  for (int c = work.channel_begin; c < work.channel_end; ++c, in += plane, out += plane) {
    const acc_t value = w_tl * static_cast<acc_t>(in[tap.top_left]) + w_tr * static_cast<acc_t>(in[tap.top_right]) +
                        w_bl * static_cast<acc_t>(in[tap.bottom_left]) +
                        w_br * static_cast<acc_t>(in[tap.bottom_right]);
    *out = static_cast<scalar_t>(value);
  }
}

// Both gradients in one pass over grad_output. grad_input (scattered to the 4 corners, hence atomics) and
// grad_flow are accumulated in acc_t buffers; either pointer may be null when that gradient is not needed.
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreadsPerBlock)
    resample2d_backward_kernel(const scalar_t* __restrict__ grad_output,  // (N, C, H, W)
                               const scalar_t* __restrict__ input,        // (N, C, H, W)
                               const acc_t* __restrict__ flow,            // (N, 2, H, W)
                               acc_t* __restrict__ grad_input,            // (N, C, H, W), zero-filled, or null
                               acc_t* __restrict__ grad_flow,             // (N, 2, H, W), zero-filled, or null
                               int channels, int height, int width, int channels_per_run) {
  const int plane = height * width;
  const ThreadWork work(channels, height, width, channels_per_run);
  if (work.pixel >= plane) return;

  const int64_t flow_offset = static_cast<int64_t>(work.batch) * 2 * plane + work.pixel;
  const BilinearTap<acc_t> tap(work.x + flow[flow_offset], work.y + flow[flow_offset + plane], height, width);
  const acc_t alpha = tap.alpha;
  const acc_t beta = tap.beta;

  const int64_t first = (static_cast<int64_t>(work.batch) * channels + work.channel_begin) * plane;
  const scalar_t* in = input + first;
  const scalar_t* grad_out = grad_output + first + work.pixel;
  acc_t* grad_in = grad_input == nullptr ? nullptr : grad_input + first;
  acc_t grad_x = 0;
  acc_t grad_y = 0;
  for (int c = work.channel_begin; c < work.channel_end; ++c, in += plane, grad_out += plane) {
    const acc_t g = static_cast<acc_t>(*grad_out);
    if (grad_in != nullptr) {
      atomicAdd(grad_in + tap.top_left, (1 - alpha) * (1 - beta) * g);
      atomicAdd(grad_in + tap.top_right, alpha * (1 - beta) * g);
      atomicAdd(grad_in + tap.bottom_left, (1 - alpha) * beta * g);
      atomicAdd(grad_in + tap.bottom_right, alpha * beta * g);
      grad_in += plane;
    }
    if (grad_flow != nullptr) {
      const acc_t v_tl = static_cast<acc_t>(in[tap.top_left]);
      const acc_t v_tr = static_cast<acc_t>(in[tap.top_right]);
      const acc_t v_bl = static_cast<acc_t>(in[tap.bottom_left]);
      const acc_t v_br = static_cast<acc_t>(in[tap.bottom_right]);
      // d(out)/d(alpha) and d(out)/d(beta); a corner pair clamped onto the same pixel gives 0, which is the
      // derivative of the border clamp.
      grad_x += g * ((1 - beta) * (v_tr - v_tl) + beta * (v_br - v_bl));
      grad_y += g * ((1 - alpha) * (v_bl - v_tl) + alpha * (v_br - v_tr));
    }
  }
  if (grad_flow != nullptr) {
    if (gridDim.y == 1) {  // this thread saw every channel: plain stores
      grad_flow[flow_offset] = grad_x;
      grad_flow[flow_offset + plane] = grad_y;
    } else {
      atomicAdd(grad_flow + flow_offset, grad_x);
      atomicAdd(grad_flow + flow_offset + plane, grad_y);
    }
  }
}

void check_arguments(const at::Tensor& input, const at::Tensor& flow) {
  TORCH_CHECK(input.is_cuda() && flow.is_cuda(), "resample2d (CUDA): input and flow must be CUDA tensors, got ",
              input.device(), " and ", flow.device());
  TORCH_CHECK(input.device() == flow.device(), "resample2d (CUDA): input on ", input.device(), " but flow on ",
              flow.device());
  TORCH_CHECK(input.dim() == 4 && flow.dim() == 4 && flow.size(1) == 2,
              "resample2d (CUDA): expected input (N, C, H, W) and flow (N, 2, H, W), got ", input.sizes(), " and ",
              flow.sizes());
  TORCH_CHECK(input.size(0) == flow.size(0) && input.size(2) == flow.size(2) && input.size(3) == flow.size(3),
              "resample2d (CUDA): input ", input.sizes(), " and flow ", flow.sizes(), " differ in batch or size");
  TORCH_CHECK(at::isFloatingType(input.scalar_type()) && at::isFloatingType(flow.scalar_type()),
              "resample2d (CUDA): expected floating point input and flow, got ", input.scalar_type(), " and ",
              flow.scalar_type());
  TORCH_CHECK(input.size(2) * input.size(3) <= INT_MAX - kThreadsPerBlock,
              "resample2d (CUDA): H * W must fit in int32, got ", input.sizes());
  TORCH_CHECK(input.size(0) <= kMaxGridYZ, "resample2d (CUDA): batch size must be <= ", kMaxGridYZ, ", got ",
              input.size(0));
}

// Launch geometry: x = pixel blocks, y = channel runs, z = batch.
struct Launch {
  dim3 grid;
  int channels_per_run;
};

// Channel runs are made just short enough for the launch to fill the GPU about twice (a memory-bound gather
// kernel needs many resident threads to hide latency) and no shorter, since every extra run re-reads the flow
// and recomputes the weights.
Launch plan_launch(const at::Tensor& input) {
  const int64_t batch = input.size(0), channels = input.size(1), plane = input.size(2) * input.size(3);
  int sm_count = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sm_count, cudaDevAttrMultiProcessorCount, input.get_device()));
  const int64_t wanted_threads = 2 * kThreadsPerSm * sm_count;
  const int64_t pixels = batch * plane;
  const int64_t runs_wanted =
      std::max<int64_t>(1, std::min({(wanted_threads + pixels - 1) / pixels, channels, kMaxGridYZ}));
  const int64_t channels_per_run = (channels + runs_wanted - 1) / runs_wanted;
  const int64_t runs = (channels + channels_per_run - 1) / channels_per_run;
  const int64_t pixel_blocks = (plane + kThreadsPerBlock - 1) / kThreadsPerBlock;
  return {dim3(static_cast<unsigned>(pixel_blocks), static_cast<unsigned>(runs), static_cast<unsigned>(batch)),
          static_cast<int>(channels_per_run)};
}

}  // namespace

at::Tensor resample2d_forward_cuda(const at::Tensor& input_arg, const at::Tensor& flow_arg) {
  check_arguments(input_arg, flow_arg);
  const c10::cuda::CUDAGuard device_guard(input_arg.device());
  const at::Tensor input = input_arg.contiguous();
  const at::Tensor flow = flow_arg.to(at::toAccumulateType(input.scalar_type(), /*is_cuda=*/true)).contiguous();
  at::Tensor output = at::empty_like(input, at::MemoryFormat::Contiguous);
  if (output.numel() == 0) return output;

  const Launch launch = plan_launch(input);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "resample2d_forward_cuda", [&] {
    using acc_t = at::acc_type<scalar_t, /*is_cuda=*/true>;
    resample2d_forward_kernel<scalar_t, acc_t><<<launch.grid, kThreadsPerBlock, 0, stream>>>(
        input.data_ptr<scalar_t>(), flow.data_ptr<acc_t>(), output.data_ptr<scalar_t>(),
        static_cast<int>(input.size(1)), static_cast<int>(input.size(2)), static_cast<int>(input.size(3)),
        launch.channels_per_run);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return output;
}

std::tuple<at::Tensor, at::Tensor> resample2d_backward_cuda(const at::Tensor& grad_output_arg,
                                                            const at::Tensor& input_arg, const at::Tensor& flow_arg,
                                                            bool need_input_grad, bool need_flow_grad) {
  check_arguments(input_arg, flow_arg);
  TORCH_CHECK(grad_output_arg.sizes() == input_arg.sizes(), "resample2d (CUDA): grad_output ",
              grad_output_arg.sizes(), " does not match input ", input_arg.sizes());
  const c10::cuda::CUDAGuard device_guard(input_arg.device());
  const at::ScalarType acc_type = at::toAccumulateType(input_arg.scalar_type(), /*is_cuda=*/true);
  const at::Tensor input = input_arg.contiguous();
  const at::Tensor flow = flow_arg.to(acc_type).contiguous();
  const at::Tensor grad_output = grad_output_arg.to(input.scalar_type()).contiguous();

  const auto acc_options = input.options().dtype(acc_type);
  at::Tensor grad_input = need_input_grad ? at::zeros(input.sizes(), acc_options) : at::empty({0}, acc_options);
  at::Tensor grad_flow = need_flow_grad ? at::zeros(flow.sizes(), acc_options) : at::empty({0}, acc_options);

  if ((need_input_grad || need_flow_grad) && input.numel() != 0) {
    const Launch launch = plan_launch(input);
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "resample2d_backward_cuda", [&] {
      using acc_t = at::acc_type<scalar_t, /*is_cuda=*/true>;
      resample2d_backward_kernel<scalar_t, acc_t><<<launch.grid, kThreadsPerBlock, 0, stream>>>(
          grad_output.data_ptr<scalar_t>(), input.data_ptr<scalar_t>(), flow.data_ptr<acc_t>(),
          need_input_grad ? grad_input.data_ptr<acc_t>() : nullptr,
          need_flow_grad ? grad_flow.data_ptr<acc_t>() : nullptr, static_cast<int>(input.size(1)),
          static_cast<int>(input.size(2)), static_cast<int>(input.size(3)), launch.channels_per_run);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  // Accumulation buffers back to the caller's dtypes (no copy when they already match, e.g. float32).
  return {grad_input.to(input_arg.scalar_type()), grad_flow.to(flow_arg.scalar_type())};
}

}  // namespace davss
