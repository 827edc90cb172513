// A sum over a module's ranks whose payload on the wire is an OuterCodec's:
// a ring reduce-scatter then a ring all-gather, the partial sums decoded,
// accumulated in fp32 and encoded again at every hop.
//
// The result depends only on the terms and their global order, never on
// which rank holds which term: the buffer is cut into one chunk per term
// (on codec block boundaries), and chunk c sums the terms c+1, c+2, ..., c
// (mod S), each term added to the decoded partial sum and the sum encoded
// again, also when consecutive terms sit on one rank. So the same deck gives
// the same weights at any rank count, and every rank decodes the same bytes.
//
// Error feedback: each encoding's residual (what it lost) belongs to the term
// just added; a term's `error` holds it for the next round, which adds it to
// the term first. Over rounds nothing is lost but the last residuals.
//
// Traffic per rank: a holder of terms sends bytes(n) in the reduce-scatter
// (each chunk group goes once round the ring of holders), every rank about
// (R-1)/R of bytes(n) in the all-gather (R: the communicator's ranks).
#pragma once
#include <mpi.h>

#include <cstdint>
#include <vector>

#include "dipaco/train/outer_codec.hpp"

namespace dipaco {

struct RingTerm {
  const float* values = nullptr;  // n values
  float* error = nullptr;         // n residuals, read and rewritten (nullptr: no error feedback)
};

class RingSum {
 public:
  // owners[t] is the communicator rank holding term t (non-decreasing in t);
  // `mine` are this rank's terms in that order. out: the sum on every rank.
  // Collective over comm (every rank, holders or not). Returns bytes sent.
  double sum(const OuterCodec& codec, const std::vector<RingTerm>& mine, const std::vector<int>& owners, size_t n,
             MPI_Comm comm, float* out);
  // What sum() sends from `rank` of a communicator of `size` ranks.
  static double bytes_sent(const OuterCodec& codec, const std::vector<int>& owners, size_t n, int rank, int size);

 private:
  void hop(const OuterCodec& codec, size_t lo, size_t hi, const RingTerm& term, bool fresh);
  std::vector<uint8_t> wire_;
  std::vector<float> acc_, dec_;
};

}  // namespace dipaco
