#include "dipaco/train/exact_sum.hpp"

#include <algorithm>
#include <cmath>

#include "dipaco/dist/pieces.hpp"
#include "dipaco/dist/watchdog.hpp"

namespace dipaco {

double ExactSum::sum(const std::vector<const float*>& terms, size_t n, long max_terms, MPI_Comm comm, float* out) {
  const size_t blocks = (n + kBlock - 1) / kBlock;
  block_max_.assign(blocks, 0.0f);
  for (const float* t : terms)
    for (size_t b = 0; b < blocks; ++b) {
      float m = block_max_[b];
      // A value that is not finite makes its block's scale infinite (a NaN would be skipped by max).
      for (size_t i = b * kBlock, e = std::min(n, i + kBlock); i < e; ++i) {
        const float a = std::fabs(t[i]);
        m = std::isfinite(a) ? std::max(m, a) : INFINITY;
      }
      block_max_[b] = m;
    }
  watched("an exact sum's block scales", [&] {
    allreduce_pieces(block_max_.data(), blocks, MPI_FLOAT, MPI_MAX, comm);
  });

  // Scale 2^shift per block: |value| * 2^shift * max_terms stays below 2^62.
  int headroom = 1;
  while ((1L << headroom) < std::max(max_terms, 1L)) ++headroom;
  shift_.resize(blocks);
  nonfinite_ = 0;
  for (size_t b = 0; b < blocks; ++b) {
    int e = 0;
    if (!std::isfinite(block_max_[b])) ++nonfinite_;
    else if (block_max_[b] > 0) std::frexp(block_max_[b], &e);  // block_max < 2^e
    shift_[b] = 62 - headroom - e;
  }
  acc_.assign(n, 0);
  for (const float* t : terms)
    for (size_t i = 0; i < n; ++i)
      if (std::isfinite(block_max_[i / kBlock])) acc_[i] += std::llrint(std::ldexp(double(t[i]), shift_[i / kBlock]));
  watched("an exact sum's all-reduce", [&] { allreduce_pieces(acc_.data(), n, MPI_INT64_T, MPI_SUM, comm); });
  // A block with a term that is not finite is NaN on every rank: never a finite value made up from it.
  for (size_t i = 0; i < n; ++i)
    out[i] = std::isfinite(block_max_[i / kBlock]) ? float(std::ldexp(double(acc_[i]), -shift_[i / kBlock])) : NAN;
  return 8.0 * n + 4.0 * blocks;
}

}  // namespace dipaco
