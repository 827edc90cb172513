// How an outer gradient travels on the wire (dipaco.outer_dtype), block by
// block of kBlock values: fp32 as is, bf16 rounded to nearest even, int8 and
// fp4 (E2M1: ±{0, 0.5, 1, 1.5, 2, 3, 4, 6}) with one fp32 scale per block
// (the block's largest magnitude maps to the type's largest value). A value
// that is not finite never decodes to a finite one: bf16 keeps NaN and inf,
// an int8 or fp4 block holding one decodes to NaN throughout.
// Encoded blocks follow each other, so the values [i, j) of a buffer, i and j
// on block boundaries, are the bytes [bytes(i), bytes(j)) of its encoding.
#pragma once
#include <cstddef>
#include <cstdint>

#include "dipaco/io/deck.hpp"  // OuterDtype

namespace dipaco {

class OuterCodec {
 public:
  static constexpr size_t kBlock = 128;
  explicit OuterCodec(OuterDtype t) : t_(t) {}
  OuterDtype dtype() const { return t_; }
  bool lossy() const { return t_ != OuterDtype::fp32; }
  // Encoded size of the first n values of a buffer.
  size_t bytes(size_t n) const;
  // x[0..n) (n values from a block boundary) into bytes(n) bytes, and back.
  void encode(const float* x, size_t n, uint8_t* out) const;
  void decode(const uint8_t* in, size_t n, float* out) const;
  // The largest |x - decode(encode(x))| of a block whose largest magnitude is amax.
  double error_bound(double amax) const;

 private:
  size_t block_bytes(size_t m) const;  // one block of m values
  OuterDtype t_;
};

}  // namespace dipaco
