#include "dipaco/train/ring_sum.hpp"

#include <algorithm>
#include <stdexcept>

#include "dipaco/dist/pieces.hpp"
#include "dipaco/dist/watchdog.hpp"

namespace dipaco {

// Pieces under Open MPI's TCP eager limit (64 KiB with the header): each one
// leaves at once, where a larger message waits a round trip for the receiver's
// rendezvous reply. Over a link with 50 ms one way that is 100 ms a hop.
constexpr size_t kRingPiece = 60 * 1024;

void RingSum::hop(size_t lo, size_t hi, const RingTerm& term, bool fresh) {
  const size_t m = hi - lo;
  if (!m) return;
  uint8_t* w = wire_.data() + codec_->bytes(lo);
  acc_.resize(m), dec_.resize(m);
  if (fresh) std::fill(acc_.begin(), acc_.end(), 0.0f);
  else codec_->decode(w, m, acc_.data());
  if (term.values) {
    const float* v = term.values + lo;
    if (term.error)
      for (size_t i = 0; i < m; ++i) acc_[i] += v[i] + term.error[lo + i];
    else
      for (size_t i = 0; i < m; ++i) acc_[i] += v[i];
  }
  codec_->encode(acc_.data(), m, w);
  if (term.error) {
    codec_->decode(w, m, dec_.data());
    for (size_t i = 0; i < m; ++i) term.error[lo + i] = acc_[i] - dec_[i];
  }
}

// Chunk c of S covers the values [start(c), start(c + 1)), on block boundaries.
static size_t chunk_start(size_t c, size_t n, size_t S, size_t blocks) {
  return std::min(n, c * blocks / S * OuterCodec::kBlock);
}

void RingSum::chunk(size_t c, size_t t0, size_t t1, bool fresh) {
  const size_t lo = chunk_start(c, n_, S_, blocks_), hi = chunk_start(c + 1, n_, S_, blocks_);
  if (t0 == t1 && fresh) hop(lo, hi, {}, true);
  for (size_t t = t0; t < t1; ++t, fresh = false) hop(lo, hi, mine_[t - b_[k_]], fresh);
}

size_t RingSum::group_start(int g) const { return codec_->bytes(chunk_start(b_[g], n_, S_, blocks_)); }
size_t RingSum::group_bytes(int g) const {
  return g < 0 ? 0 : codec_->bytes(chunk_start(e_[g], n_, S_, blocks_)) - group_start(g);
}

void RingSum::start(const OuterCodec& codec, const std::vector<RingTerm>& mine, const std::vector<int>& owners, size_t n,
                    MPI_Comm comm) {
  int rank, size;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  codec_ = &codec, mine_ = mine, comm_ = comm, n_ = n, S_ = owners.size();
  blocks_ = (n + OuterCodec::kBlock - 1) / OuterCodec::kBlock;
  rank_of_holder_.clear(), b_.clear(), e_.clear(), steps_.clear(), reqs_.clear();
  next_ = 0, posted_ = false, sent_ = 0, k_ = -1;
  for (size_t t = 0; t < owners.size(); ++t) {
    if (rank_of_holder_.empty() || rank_of_holder_.back() != owners[t]) {
      if (!rank_of_holder_.empty() && owners[t] < rank_of_holder_.back())
        throw std::logic_error("ring sum: term owners out of rank order");
      rank_of_holder_.push_back(owners[t]), b_.push_back(t), e_.push_back(t);
    }
    e_.back() = t + 1;
  }
  const int K = int(rank_of_holder_.size());
  auto holder = [&](int r) {
    auto it = std::find(rank_of_holder_.begin(), rank_of_holder_.end(), r);
    return it == rank_of_holder_.end() ? -1 : int(it - rank_of_holder_.begin());
  };
  k_ = holder(rank);
  if (k_ >= 0 ? mine.size() != e_[k_] - b_[k_] : !mine.empty())
    throw std::logic_error("ring sum: this rank's terms disagree with the owners");
  wire_.assign(S_ && n ? codec.bytes(n) : 0, 0);
  if (!S_ || !n) return;

  // Reduce-scatter among the holders: chunk c starts at term c + 1 and ends at
  // term c, so holder k's own chunks go once round the ring and come back.
  if (k_ >= 0) {
    for (size_t c = b_[k_]; c < e_[k_]; ++c) chunk(c, c + 1, e_[k_], true);
    if (K == 1)
      for (size_t c = b_[k_]; c < e_[k_]; ++c) chunk(c, b_[k_], c + 1, false);
    for (int s = 1; K > 1 && s <= K; ++s)
      steps_.push_back({(k_ - s + 1 + K) % K, (k_ - s + K) % K, rank_of_holder_[(k_ + 1) % K],
                        rank_of_holder_[(k_ - 1 + K) % K], s < K ? Then::add_all : Then::finish_own});
  }
  // All-gather over every rank of comm: each holder's finished chunks go round.
  for (int s = 1; s < size; ++s)
    steps_.push_back({holder((rank - s + 1 + size) % size), holder((rank - s + size) % size), (rank + 1) % size,
                      (rank - 1 + size) % size, Then::keep});
  advance();
}

void RingSum::post(const Step& s) {
  const size_t rn = group_bytes(s.recv), sn = group_bytes(s.send);
  uint8_t* r = s.recv >= 0 ? wire_.data() + group_start(s.recv) : nullptr;
  const uint8_t* w = s.send >= 0 ? wire_.data() + group_start(s.send) : nullptr;
  for (size_t o = 0; o < rn; o += kRingPiece)
    MPI_Irecv(r + o, int(std::min(kRingPiece, rn - o)), MPI_BYTE, s.from, 0, comm_, &reqs_.emplace_back());
  for (size_t o = 0; o < sn; o += kRingPiece)
    MPI_Isend(w + o, int(std::min(kRingPiece, sn - o)), MPI_BYTE, s.to, 0, comm_, &reqs_.emplace_back());
  sent_ += double(sn);
}

void RingSum::process(const Step& s) {
  if (s.then == Then::keep) return;
  for (size_t c = b_[s.recv]; c < e_[s.recv]; ++c)
    chunk(c, b_[k_], s.then == Then::add_all ? e_[k_] : c + 1, false);
}

bool RingSum::advance() {
  while (next_ < steps_.size()) {
    if (!posted_) post(steps_[next_]), posted_ = true;
    if (!reqs_.empty()) {
      int done = 0;
      MPI_Testall(int(reqs_.size()), reqs_.data(), &done, MPI_STATUSES_IGNORE);
      if (!done) return false;
    }
    reqs_.clear(), posted_ = false;
    process(steps_[next_++]);
  }
  return true;
}

void RingSum::wait() {
  if (reqs_.empty()) return;
  watched("an outer round's ring step", [&] { MPI_Waitall(int(reqs_.size()), reqs_.data(), MPI_STATUSES_IGNORE); });
}

double RingSum::finish(float* out) {
  while (!advance()) wait();
  if (wire_.empty()) std::fill(out, out + n_, 0.0f);
  else codec_->decode(wire_.data(), n_, out);
  return sent_;
}

double RingSum::sum(const OuterCodec& codec, const std::vector<RingTerm>& mine, const std::vector<int>& owners, size_t n,
                    MPI_Comm comm, float* out) {
  start(codec, mine, owners, n, comm);
  return finish(out);
}

double RingSum::bytes_sent(const OuterCodec& codec, const std::vector<int>& owners, size_t n, int rank, int size) {
  if (owners.empty() || n == 0) return 0;
  RingSum plan;
  plan.codec_ = &codec, plan.n_ = n, plan.S_ = owners.size(), plan.blocks_ = (n + OuterCodec::kBlock - 1) / OuterCodec::kBlock;
  std::vector<int> holders;
  std::vector<size_t> b, e;
  for (size_t t = 0; t < owners.size(); ++t) {
    if (holders.empty() || holders.back() != owners[t]) holders.push_back(owners[t]), b.push_back(t), e.push_back(t);
    e.back() = t + 1;
  }
  plan.b_ = b, plan.e_ = e;
  const int K = int(holders.size());
  auto holder = [&](int r) {
    auto it = std::find(holders.begin(), holders.end(), r);
    return it == holders.end() ? -1 : int(it - holders.begin());
  };
  const int k = holder(rank);
  double sent = 0;
  for (int s = 1; k >= 0 && K > 1 && s <= K; ++s) sent += double(plan.group_bytes((k - s + 1 + K) % K));
  for (int s = 1; s < size; ++s) sent += double(plan.group_bytes(holder((rank - s + 1 + size) % size)));
  return sent;
}

}  // namespace dipaco
