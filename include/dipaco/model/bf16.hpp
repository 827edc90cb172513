// bf16 as the top 16 bits of an fp32, rounded to nearest even (NaN aside).
#pragma once
#include <bit>
#include <cstdint>

namespace dipaco {

inline uint16_t to_bf16(float x) {
  uint32_t u = std::bit_cast<uint32_t>(x);
  u += 0x7FFFu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}
inline float from_bf16(uint16_t b) { return std::bit_cast<float>(uint32_t(b) << 16); }

}  // namespace dipaco
