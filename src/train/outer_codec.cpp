#include "dipaco/train/outer_codec.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>

#include "dipaco/model/bf16.hpp"

namespace dipaco {

namespace {

constexpr float kFp4[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};

// Nearest E2M1 magnitude of y in [0, 6] (ties to the smaller).
inline uint8_t fp4_code(float y) {
  uint8_t c = 0;
  for (uint8_t i = 1; i < 8; ++i)
    if (y > 0.5f * (kFp4[i - 1] + kFp4[i])) c = i;
  return c;
}

// NaN when a value is not finite (std::max alone would skip a NaN).
float block_amax(const float* x, size_t m) {
  float a = 0;
  for (size_t i = 0; i < m; ++i) {
    if (!std::isfinite(x[i])) return NAN;
    a = std::max(a, std::fabs(x[i]));
  }
  return a;
}

}  // namespace

size_t OuterCodec::block_bytes(size_t m) const {
  switch (t_) {
    case OuterDtype::fp32: return 4 * m;
    case OuterDtype::bf16: return 2 * m;
    case OuterDtype::int8: return 4 + m;
    case OuterDtype::fp4: return 4 + (m + 1) / 2;
  }
  return 0;
}

size_t OuterCodec::bytes(size_t n) const {
  const size_t full = n / kBlock, rest = n % kBlock;
  return full * block_bytes(kBlock) + (rest ? block_bytes(rest) : 0);
}

double OuterCodec::error_bound(double amax) const {
  switch (t_) {
    case OuterDtype::fp32: return 0;
    case OuterDtype::bf16: return amax * std::ldexp(1.0, -8);  // half an ulp of 8 significant bits
    case OuterDtype::int8: return amax / 127 * (0.5 + 1e-5);
    case OuterDtype::fp4: return amax / 6 * (1.0 + 1e-5);    // half the widest gap (4 to 6)
  }
  return 0;
}

void OuterCodec::encode(const float* x, size_t n, uint8_t* out) const {
  for (size_t b = 0; b < n; b += kBlock) {
    const size_t m = std::min(kBlock, n - b);
    const float* v = x + b;
    if (t_ == OuterDtype::fp32) {
      std::memcpy(out, v, 4 * m);
    } else if (t_ == OuterDtype::bf16) {
      for (size_t i = 0; i < m; ++i) {
        // NaN stays NaN (rounding can carry a NaN's payload into the sign and give 0) and inf stays inf.
        const uint16_t h = std::isnan(v[i]) ? uint16_t(0x7FC0) : to_bf16(v[i]);
        std::memcpy(out + 2 * i, &h, 2);
      }
    } else {
      // A block with a value that is not finite: scale NaN, codes 0, so that it decodes to NaN, never to finite values.
      const float amax = block_amax(v, m);
      const float top = t_ == OuterDtype::int8 ? 127.0f : 6.0f;
      const float scale = amax / top, inv = amax > 0 && std::isfinite(amax) ? top / amax : 0.0f;
      std::memcpy(out, &scale, 4);
      uint8_t* q = out + 4;
      if (t_ == OuterDtype::int8) {
        for (size_t i = 0; i < m; ++i)
          q[i] = inv > 0 ? uint8_t(int8_t(std::clamp(std::nearbyint(v[i] * inv), -127.0f, 127.0f))) : 0;
      } else {
        std::memset(q, 0, (m + 1) / 2);
        for (size_t i = 0; i < m; ++i) {
          const uint8_t c = uint8_t(fp4_code(std::min(std::fabs(v[i]) * inv, 6.0f)) | (std::signbit(v[i]) ? 8 : 0));
          q[i / 2] |= uint8_t(i % 2 ? c << 4 : c);
        }
      }
    }
    out += block_bytes(m);
  }
}

void OuterCodec::decode(const uint8_t* in, size_t n, float* out) const {
  for (size_t b = 0; b < n; b += kBlock) {
    const size_t m = std::min(kBlock, n - b);
    float* v = out + b;
    if (t_ == OuterDtype::fp32) {
      std::memcpy(v, in, 4 * m);
    } else if (t_ == OuterDtype::bf16) {
      for (size_t i = 0; i < m; ++i) {
        uint16_t h;
        std::memcpy(&h, in + 2 * i, 2);
        v[i] = from_bf16(h);
      }
    } else {
      float scale;
      std::memcpy(&scale, in, 4);
      const uint8_t* q = in + 4;
      if (t_ == OuterDtype::int8) {
        for (size_t i = 0; i < m; ++i) v[i] = float(int8_t(q[i])) * scale;
      } else {
        for (size_t i = 0; i < m; ++i) {
          const uint8_t c = uint8_t(i % 2 ? q[i / 2] >> 4 : q[i / 2] & 15);
          const float mag = kFp4[c & 7] * scale;
          v[i] = c & 8 ? -mag : mag;
        }
      }
    }
    in += block_bytes(m);
  }
}

}  // namespace dipaco
