// Runs the per-pixel arithmetic of the resample2d CUDA kernels (lib/ops/csrc/resample2d_math.h) on the CPU, mapped
// to pixels and channel runs the way the kernels map it to threads, so that tests/test_resample2d.py can compare
// it with its float64 naive loop on machines without a GPU. Built by that test with g++ (plain C++17):
//
//   resample2d_host_test warp DTYPE N C H W RUN input flow grad_output output grad_input grad_flow
//       DTYPE float16 | bfloat16 | float32 | float64; RUN channels per thread (as the kernel's channel runs;
//       grad_flow is then summed over runs, as the kernel's atomics do). Files are raw little-endian: input,
//       grad_output and output in DTYPE (16-bit types as their bits), flow, grad_input and grad_flow in the
//       arithmetic type (float64 for float64, else float32), all contiguous NCHW.
//   resample2d_host_test roundtrip DTYPE values narrow wide
//       float32 values -> DTYPE bits (round to nearest even) -> back to float32: checks the 16-bit storage types.
//   resample2d_host_test offsets BATCH PIXEL CHANNEL C H W XF YF
//       prints the 64-bit flow offsets (dx, dy) of a pixel, the plane offset of a channel, and the four corner
//       offsets and alpha, beta of a sample position (to check index math at sizes too large to allocate).
//
// 16-bit storage: the kernels read c10::Half / c10::BFloat16 and compute in float. Here Float16 and BFloat16 are
// small structs holding the IEEE binary16 / bfloat16 bits, with the conversions written out below (round to
// nearest even, like the GPU's cvt.rn and c10's), so the same header templates run with the same storage.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmath>
#include <string>
#include <vector>

#include "resample2d_math.h"

namespace {

uint32_t float_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return u;
}

float bits_float(uint32_t u) {
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

struct Float16 {
  uint16_t bits;

  Float16() : bits(0) {}
  explicit Float16(float f) {
    const uint32_t x = float_bits(f);
    const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
    const uint32_t magnitude = x & 0x7fffffffu;
    if (magnitude > 0x7f800000u) {  // NaN: quiet NaN
      bits = sign | 0x7e00u;
    } else if (magnitude >= 0x477ff000u) {  // >= 65520 (and inf) rounds to inf
      bits = sign | 0x7c00u;
    } else if (magnitude < 0x38800000u) {  // below 2^-14: a subnormal half, in units of 2^-24
      // Scaling by a power of two is exact and the result is below 2^10, so nearbyint rounds it to nearest even.
      bits = sign | static_cast<uint16_t>(std::nearbyint(bits_float(magnitude) * 16777216.0f));
    } else {  // normal: rebias the exponent (127 -> 15), round 23 mantissa bits to 10, nearest even
      const uint32_t rebiased = magnitude - ((127u - 15u) << 23);
      bits = sign | static_cast<uint16_t>((rebiased + 0xfffu + ((rebiased >> 13) & 1u)) >> 13);
    }
  }
  explicit operator float() const {
    const uint32_t sign = static_cast<uint32_t>(bits & 0x8000u) << 16;
    const uint32_t exponent = (bits >> 10) & 0x1fu;
    const uint32_t mantissa = bits & 0x3ffu;
    if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24
      const float value = std::ldexp(static_cast<float>(mantissa), -24);
      return sign ? -value : value;
    }
    if (exponent == 31) return bits_float(sign | 0x7f800000u | (mantissa << 13));
    return bits_float(sign | ((exponent + 127u - 15u) << 23) | (mantissa << 13));
  }
  explicit operator double() const { return static_cast<float>(*this); }
};

struct BFloat16 {
  uint16_t bits;

  BFloat16() : bits(0) {}
  explicit BFloat16(float f) {
    const uint32_t x = float_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) {
      bits = static_cast<uint16_t>(((x >> 16) & 0x8000u) | 0x7fc0u);
    } else {
      bits = static_cast<uint16_t>((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
    }
  }
  explicit operator float() const { return bits_float(static_cast<uint32_t>(bits) << 16); }
  explicit operator double() const { return static_cast<float>(*this); }
};

[[noreturn]] void fail(const std::string& message) {
  fprintf(stderr, "resample2d_host_test: %s\n", message.c_str());
  exit(2);
}

template <typename T>
std::vector<T> read_file(const char* path, size_t count) {
  std::vector<T> data(count);
  FILE* file = fopen(path, "rb");
  if (file == nullptr) fail(std::string("cannot open ") + path);
  const size_t got = count == 0 ? 0 : fread(data.data(), sizeof(T), count, file);
  const bool extra = fgetc(file) != EOF;
  fclose(file);
  if (got != count || extra) fail(std::string(path) + ": expected exactly " + std::to_string(count) + " values");
  return data;
}

template <typename T>
void write_file(const char* path, const std::vector<T>& data) {
  FILE* file = fopen(path, "wb");
  if (file == nullptr) fail(std::string("cannot create ") + path);
  const size_t put = data.empty() ? 0 : fwrite(data.data(), sizeof(T), data.size(), file);
  if (put != data.size() || fclose(file) != 0) fail(std::string("cannot write ") + path);
}

struct HostAdd {
  template <typename acc_t>
  void operator()(acc_t* address, acc_t value) const {
    *address += value;
  }
};

// What the two kernels compute, thread by thread: every (batch, channel run, pixel).
template <typename scalar_t, typename acc_t>
void warp(int n, int c, int h, int w, int run, char** paths) {
  const size_t map = size_t(n) * c * h * w;
  const size_t flow_size = size_t(n) * 2 * h * w;
  const std::vector<scalar_t> input = read_file<scalar_t>(paths[0], map);
  const std::vector<acc_t> flow = read_file<acc_t>(paths[1], flow_size);
  const std::vector<scalar_t> grad_output = read_file<scalar_t>(paths[2], map);
  std::vector<scalar_t> output(map);
  std::vector<acc_t> grad_input(map, acc_t(0));
  std::vector<acc_t> grad_flow(flow_size, acc_t(0));
  const int64_t plane = int64_t(h) * w;
  for (int b = 0; b < n; ++b) {
    for (int begin = 0; begin < c; begin += run) {
      const int end = begin + run < c ? begin + run : c;
      for (int pixel = 0; pixel < plane; ++pixel) {
        davss::math::forward_pixel(input.data(), flow.data(), output.data(), b, pixel, begin, end, c, h, w);
        acc_t grad_x, grad_y;
        davss::math::backward_pixel(grad_output.data(), input.data(), flow.data(), grad_input.data(), true, b,
                                    pixel, begin, end, c, h, w, HostAdd(), grad_x, grad_y);
        const int64_t offset = davss::math::flow_offset(b, pixel, plane);
        grad_flow[offset] += grad_x;
        grad_flow[offset + plane] += grad_y;
      }
    }
  }
  write_file(paths[3], output);
  write_file(paths[4], grad_input);
  write_file(paths[5], grad_flow);
}

template <typename scalar_t>
void roundtrip(char** paths) {
  FILE* file = fopen(paths[0], "rb");
  if (file == nullptr) fail(std::string("cannot open ") + paths[0]);
  fseek(file, 0, SEEK_END);
  const long bytes = ftell(file);
  fclose(file);
  const std::vector<float> values = read_file<float>(paths[0], size_t(bytes) / sizeof(float));
  std::vector<uint16_t> narrow;
  std::vector<float> wide;
  for (float value : values) {
    const scalar_t stored(value);
    narrow.push_back(stored.bits);
    wide.push_back(static_cast<float>(stored));
  }
  write_file(paths[1], narrow);
  write_file(paths[2], wide);
}

void offsets(char** args) {
  const int batch = atoi(args[0]);
  const int64_t pixel = atoll(args[1]);
  const int channel = atoi(args[2]);
  const int c = atoi(args[3]);
  const int h = atoi(args[4]);
  const int w = atoi(args[5]);
  const float xf = strtof(args[6], nullptr);
  const float yf = strtof(args[7], nullptr);
  const int64_t plane = int64_t(h) * w;
  const int64_t flow = davss::math::flow_offset(batch, pixel, plane);
  const davss::math::BilinearTap<float> tap(xf, yf, h, w);
  printf("flow_dx %lld\nflow_dy %lld\nplane %lld\n", static_cast<long long>(flow),
         static_cast<long long>(flow + plane),
         static_cast<long long>(davss::math::plane_offset(batch, channel, c, plane)));
  printf("top_left %d\ntop_right %d\nbottom_left %d\nbottom_right %d\nalpha %.9g\nbeta %.9g\n", tap.top_left,
         tap.top_right, tap.bottom_left, tap.bottom_right, tap.alpha, tap.beta);
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "warp" && argc == 14) {
    const std::string dtype = argv[2];
    const int n = atoi(argv[3]), c = atoi(argv[4]), h = atoi(argv[5]), w = atoi(argv[6]), run = atoi(argv[7]);
    if (n < 1 || c < 1 || h < 1 || w < 1 || run < 1) fail("N, C, H, W and RUN must be positive");
    if (dtype == "float16") {
      warp<Float16, float>(n, c, h, w, run, argv + 8);
    } else if (dtype == "bfloat16") {
      warp<BFloat16, float>(n, c, h, w, run, argv + 8);
    } else if (dtype == "float32") {
      warp<float, float>(n, c, h, w, run, argv + 8);
    } else if (dtype == "float64") {
      warp<double, double>(n, c, h, w, run, argv + 8);
    } else {
      fail("DTYPE must be float16, bfloat16, float32 or float64, got " + dtype);
    }
    return 0;
  }
  if (mode == "roundtrip" && argc == 6) {
    const std::string dtype = argv[2];
    if (dtype == "float16") {
      roundtrip<Float16>(argv + 3);
    } else if (dtype == "bfloat16") {
      roundtrip<BFloat16>(argv + 3);
    } else {
      fail("roundtrip DTYPE must be float16 or bfloat16, got " + dtype);
    }
    return 0;
  }
  if (mode == "offsets" && argc == 10) {
    offsets(argv + 2);
    return 0;
  }
  fail("usage: warp DTYPE N C H W RUN 6xFILE | roundtrip DTYPE 3xFILE | offsets BATCH PIXEL CHANNEL C H W XF YF");
}
