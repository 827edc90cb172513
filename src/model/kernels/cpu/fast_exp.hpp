// exp(x) for x in about [-87, 88] to ~2 ulp, for a float or a GCC vector of
// floats, written so that loops vectorise (libm's expf does not without
// -ffast-math; the clamps need -fno-trapping-math): x = n ln2 + r, a degree-6
// polynomial for exp(r), 2^n built in the exponent bits. One body for the row
// kernels and the fused attention's vector lanes.
#pragma once
#include <cstdint>
#include <cstring>
#include <type_traits>

namespace dipaco {

// A vector F is passed in registers only inside the clones it is inlined into.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"
template <typename F>
__attribute__((always_inline)) inline F fast_exp(F x) {
  x = x < -87.0f ? -87.0f : x;
  x = x > 88.0f ? 88.0f : x;
  const float shifter = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  F n = (x * 1.44269504088896341f + shifter) - shifter;
  F r = x - n * 0.693359375f + n * 2.12194440e-4f;
  F p = r * 1.9875691500e-4f + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  F two_n;
  if constexpr (std::is_same_v<F, float>) {
    const int32_t bits = (int32_t(n) + 127) << 23;
    std::memcpy(&two_n, &bits, sizeof two_n);
  } else {
    typedef int32_t ivec __attribute__((vector_size(sizeof(F))));
    const ivec bits = (__builtin_convertvector(n, ivec) + 127) << 23;
    std::memcpy(&two_n, &bits, sizeof two_n);
  }
  return p * two_n;
}
#pragma GCC diagnostic pop

}  // namespace dipaco
