// CUDA kernels of resample2d (docs/resample2d.md). One thread owns one output pixel and a run of channels, so the
// flow and the bilinear taps are computed once per run; consecutive threads own consecutive x (coalesced access).
// Arithmetic and the flow are in at::acc_type, so low-precision inputs never round sample positions.
#include <ATen/ATen.h>
#include <ATen/AccumulateType.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <climits>

#include "resample2d.h"
#include "resample2d_math.h"

namespace davss {
namespace {

constexpr int kThreadsPerBlock = 256;
// Resident threads per SM on sm_80 / sm_90 (2048); used only to size the launch, so an estimate is enough.
constexpr int64_t kThreadsPerSm = 2048;
// Max gridDim.y / gridDim.z.
constexpr int64_t kMaxGridYZ = 65535;

// Work split shared by both kernels: pixel index inside the plane, batch index and channel range.
struct ThreadWork {
  int pixel, batch, channel_begin, channel_end;

  __device__ __forceinline__ ThreadWork(int channels, int channels_per_run) {
    // 64-bit product: blockIdx.x * blockDim.x passes 2^31 for the last blocks of planes near INT_MAX.
    pixel = static_cast<int>(static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x);
    batch = blockIdx.z;
    channel_begin = blockIdx.y * channels_per_run;
    channel_end = min(channel_begin + channels_per_run, channels);
  }
};

struct AtomicAdd {
  template <typename acc_t>
  __device__ __forceinline__ void operator()(acc_t* address, acc_t value) const {
    atomicAdd(address, value);
  }
};

// The per-pixel arithmetic is in resample2d_math.h (tested on the host).
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreadsPerBlock)
    resample2d_forward_kernel(const scalar_t* __restrict__ input,  // (N, C, H, W)
                              const acc_t* __restrict__ flow,      // (N, 2, H, W)
                              scalar_t* __restrict__ output,       // (N, C, H, W)
                              int channels, int height, int width, int channels_per_run) {
  const ThreadWork work(channels, channels_per_run);
  if (work.pixel >= static_cast<int64_t>(height) * width) return;
  math::forward_pixel(input, flow, output, work.batch, work.pixel, work.channel_begin, work.channel_end, channels,
                      height, width);
}

// Both gradients in one pass, into acc_t buffers (null: not needed); grad_input is a scatter, hence atomics. With
// one channel run (gridDim.y == 1, forced by the deterministic mode) grad_flow is stored without atomics.
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreadsPerBlock)
    resample2d_backward_kernel(const scalar_t* __restrict__ grad_output,  // (N, C, H, W)
                               const scalar_t* __restrict__ input,        // (N, C, H, W)
                               const acc_t* __restrict__ flow,            // (N, 2, H, W)
                               acc_t* __restrict__ grad_input,            // (N, C, H, W), zero-filled, or null
                               acc_t* __restrict__ grad_flow,             // (N, 2, H, W), zero-filled, or null
                               int channels, int height, int width, int channels_per_run) {
  const ThreadWork work(channels, channels_per_run);
  const int64_t plane = static_cast<int64_t>(height) * width;
  if (work.pixel >= plane) return;
  acc_t grad_x, grad_y;
  math::backward_pixel(grad_output, input, flow, grad_input, grad_flow != nullptr, work.batch, work.pixel,
                       work.channel_begin, work.channel_end, channels, height, width, AtomicAdd(), grad_x, grad_y);
  if (grad_flow != nullptr) {
    const int64_t offset = math::flow_offset(work.batch, work.pixel, plane);
    if (gridDim.y == 1) {  // this thread saw every channel: plain stores
      grad_flow[offset] = grad_x;
      grad_flow[offset + plane] = grad_y;
    } else {
      atomicAdd(grad_flow + offset, grad_x);
      atomicAdd(grad_flow + offset + plane, grad_y);
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
  TORCH_CHECK(input.size(1) <= INT_MAX, "resample2d (CUDA): C must fit in int32, got ", input.sizes());
  TORCH_CHECK(input.size(0) <= kMaxGridYZ, "resample2d (CUDA): batch size must be <= ", kMaxGridYZ, ", got ",
              input.size(0));
}

// Launch geometry: x = pixel blocks, y = channel runs, z = batch.
struct Launch {
  dim3 grid;
  int channels_per_run;
};

// Channel runs just short enough to fill the GPU about twice (latency hiding); every extra run re-reads the flow.
// `single_run`: all channels of a pixel in one thread (the deterministic backward pass).
Launch plan_launch(const at::Tensor& input, bool single_run = false) {
  const int64_t batch = input.size(0), channels = input.size(1), plane = input.size(2) * input.size(3);
  int sm_count = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sm_count, cudaDevAttrMultiProcessorCount, input.get_device()));
  const int64_t wanted_threads = 2 * kThreadsPerSm * sm_count;
  const int64_t pixels = batch * plane;
  const int64_t runs_wanted =
      single_run ? 1 : std::max<int64_t>(1, std::min({(wanted_threads + pixels - 1) / pixels, channels, kMaxGridYZ}));
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
                                                            bool need_input_grad, bool need_flow_grad,
                                                            bool deterministic) {
  // The deterministic mode leaves the grad_input scatter to the caller (lib/ops/resample2d.py: sorted index_put_).
  TORCH_CHECK(!(deterministic && need_input_grad),
              "resample2d (CUDA): the deterministic backward pass computes grad_flow only");
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
    const Launch launch = plan_launch(input, deterministic);
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
