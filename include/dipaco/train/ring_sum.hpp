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
  // The same, in three calls: start() posts the first messages, advance()
  // (between inner steps) moves the ring on as far as the messages that have
  // arrived allow and says whether it is done, wait() blocks until the messages
  // of the current exchange have arrived (advance() then moves on), finish()
  // waits for the rest and decodes the sum. The terms must stay in place until finish().
  void start(const OuterCodec& codec, const std::vector<RingTerm>& mine, const std::vector<int>& owners, size_t n,
             MPI_Comm comm);
  bool advance();
  void wait();
  double finish(float* out);
  // What sum() sends from `rank` of a communicator of `size` ranks.
  static double bytes_sent(const OuterCodec& codec, const std::vector<int>& owners, size_t n, int rank, int size);

 private:
  // One exchange with the ring neighbours: the chunk group sent and the one
  // received (-1: none), and what the received one goes through here.
  enum class Then { add_all, finish_own, keep };
  struct Step {
    int send = -1, recv = -1, to = 0, from = 0;
    Then then = Then::keep;
  };
  void hop(size_t lo, size_t hi, const RingTerm& term, bool fresh);
  void chunk(size_t c, size_t t0, size_t t1, bool fresh);  // chunk c through this rank's terms [t0, t1)
  size_t group_start(int g) const;
  size_t group_bytes(int g) const;
  void post(const Step& s);
  void process(const Step& s);

  const OuterCodec* codec_ = nullptr;
  std::vector<RingTerm> mine_;
  std::vector<int> rank_of_holder_;
  std::vector<size_t> b_, e_;  // each holder's terms [b, e)
  int k_ = -1;                 // this rank's holder index
  size_t n_ = 0, S_ = 0, blocks_ = 0;
  MPI_Comm comm_ = MPI_COMM_NULL;
  std::vector<Step> steps_;
  size_t next_ = 0;
  bool posted_ = false;
  std::vector<MPI_Request> reqs_;
  double sent_ = 0;
  std::vector<uint8_t> wire_;
  std::vector<float> acc_, dec_;
};

}  // namespace dipaco
