// A sum over ranks whose result does not depend on the number of ranks or on
// which rank holds which term: every value becomes a 64-bit fixed-point
// integer (one scale per block of 256 values, from the block's largest
// magnitude over all terms), and integer addition is associative. The error
// of a block is below 2^-50 of its largest term. Used where the same deck must
// give bitwise the same weights at any rank count (the outer gradients).
// A term that is not finite (NaN, inf) makes its whole block NaN in the sum
// on every rank, and is counted: callers refuse such a sum.
#pragma once
#include <mpi.h>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace dipaco {

class ExactSum {
 public:
  // out[i] = sum of terms[t][i] over every term of every rank of comm.
  // Collective over comm; a rank may hold no terms. max_terms bounds the
  // number of terms over all ranks (it sets the headroom of the integers).
  // Returns the bytes this rank passed to MPI.
  double sum(const std::vector<const float*>& terms, size_t n, long max_terms, MPI_Comm comm, float* out);

  // Blocks of the last sum holding a value that is not finite (NaN in out).
  size_t nonfinite_blocks() const { return nonfinite_; }

  static constexpr size_t kBlock = 256;

 private:
  std::vector<float> block_max_;
  std::vector<int> shift_;
  std::vector<int64_t> acc_;
  size_t nonfinite_ = 0;
};

}  // namespace dipaco
