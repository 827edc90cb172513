#include "dipaco/train/ring_sum.hpp"

#include <algorithm>
#include <stdexcept>

#include "dipaco/dist/pieces.hpp"
#include "dipaco/dist/watchdog.hpp"

namespace dipaco {

namespace {

// The terms' holders, in ring order, with the terms [b, e) each holds.
struct Holders {
  std::vector<int> rank;
  std::vector<size_t> b, e;
  int index_of(int r) const {
    auto it = std::find(rank.begin(), rank.end(), r);
    return it == rank.end() ? -1 : int(it - rank.begin());
  }
};

Holders holders_of(const std::vector<int>& owners) {
  Holders h;
  for (size_t t = 0; t < owners.size(); ++t) {
    if (h.rank.empty() || h.rank.back() != owners[t]) {
      if (!h.rank.empty() && owners[t] < h.rank.back()) throw std::logic_error("ring sum: term owners out of rank order");
      h.rank.push_back(owners[t]), h.b.push_back(t), h.e.push_back(t);
    }
    h.e.back() = t + 1;
  }
  return h;
}

// Chunk c of S covers the values [start(c), start(c + 1)), on block boundaries.
struct Chunks {
  size_t n, S, blocks;
  Chunks(size_t n_, size_t S_) : n(n_), S(S_), blocks((n_ + OuterCodec::kBlock - 1) / OuterCodec::kBlock) {}
  size_t start(size_t c) const { return std::min(n, c * blocks / S * OuterCodec::kBlock); }
};

// Sends bytes [s, s + sn) to `to` while receiving [r, r + rn) from `from`, in pieces.
void exchange(const uint8_t* s, size_t sn, int to, uint8_t* r, size_t rn, int from, MPI_Comm comm) {
  std::vector<MPI_Request> reqs;
  for (size_t o = 0; o < rn; o += kMaxPiece)
    MPI_Irecv(r + o, int(std::min(kMaxPiece, rn - o)), MPI_BYTE, from, 0, comm, &reqs.emplace_back());
  for (size_t o = 0; o < sn; o += kMaxPiece)
    MPI_Isend(s + o, int(std::min(kMaxPiece, sn - o)), MPI_BYTE, to, 0, comm, &reqs.emplace_back());
  if (reqs.empty()) return;
  watched("an outer round's ring step", [&] { MPI_Waitall(int(reqs.size()), reqs.data(), MPI_STATUSES_IGNORE); });
}

// The ring's schedule, shared by sum() and bytes_sent(): calls send(bytes) for
// every message `rank` sends, in order.
template <class Send>
void schedule(const OuterCodec& codec, const Holders& h, const Chunks& ch, int rank, int size, Send&& send) {
  const int K = int(h.rank.size()), k = h.index_of(rank);
  auto group_bytes = [&](int g) { return codec.bytes(ch.start(h.e[g])) - codec.bytes(ch.start(h.b[g])); };
  if (k >= 0 && K > 1)
    for (int s = 1; s <= K; ++s) send(group_bytes((k - s + 1 + K) % K));
  for (int s = 1; s < size; ++s) {
    const int g = h.index_of((rank - s + 1 + size) % size);
    if (g >= 0) send(group_bytes(g));
  }
}

}  // namespace

void RingSum::hop(const OuterCodec& codec, size_t lo, size_t hi, const RingTerm& term, bool fresh) {
  const size_t m = hi - lo;
  if (!m) return;
  uint8_t* w = wire_.data() + codec.bytes(lo);
  acc_.resize(m), dec_.resize(m);
  if (fresh) std::fill(acc_.begin(), acc_.end(), 0.0f);
  else codec.decode(w, m, acc_.data());
  if (term.values) {
    const float* v = term.values + lo;
    if (term.error)
      for (size_t i = 0; i < m; ++i) acc_[i] += v[i] + term.error[lo + i];
    else
      for (size_t i = 0; i < m; ++i) acc_[i] += v[i];
  }
  codec.encode(acc_.data(), m, w);
  if (term.error) {
    codec.decode(w, m, dec_.data());
    for (size_t i = 0; i < m; ++i) term.error[lo + i] = acc_[i] - dec_[i];
  }
}

double RingSum::sum(const OuterCodec& codec, const std::vector<RingTerm>& mine, const std::vector<int>& owners, size_t n,
                    MPI_Comm comm, float* out) {
  int rank, size;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  const Holders h = holders_of(owners);
  const int K = int(h.rank.size()), k = h.index_of(rank);
  if (k >= 0 && mine.size() != h.e[k] - h.b[k]) throw std::logic_error("ring sum: this rank's terms disagree with the owners");
  if (k < 0 && !mine.empty()) throw std::logic_error("ring sum: terms on a rank that owns none");
  std::fill(out, out + n, 0.0f);
  if (owners.empty() || n == 0) return 0;
  const Chunks ch(n, owners.size());
  wire_.assign(codec.bytes(n), 0);
  auto chunk = [&](size_t c, size_t t0, size_t t1, bool fresh) {  // chunk c through this rank's terms [t0, t1)
    if (t0 == t1 && fresh) hop(codec, ch.start(c), ch.start(c + 1), {}, true);
    for (size_t t = t0; t < t1; ++t, fresh = false) hop(codec, ch.start(c), ch.start(c + 1), mine[t - h.b[k]], fresh);
  };
  auto slice = [&](int g) { return wire_.data() + codec.bytes(ch.start(h.b[g])); };
  auto bytes = [&](int g) { return codec.bytes(ch.start(h.e[g])) - codec.bytes(ch.start(h.b[g])); };
  double sent = 0;

  // Reduce-scatter among the holders: chunk c starts at term c + 1 and ends at
  // term c, so holder k's own chunks go once round the ring and come back.
  if (k >= 0) {
    for (size_t c = h.b[k]; c < h.e[k]; ++c) chunk(c, c + 1, h.e[k], true);
    if (K == 1) {
      for (size_t c = h.b[k]; c < h.e[k]; ++c) chunk(c, h.b[k], c + 1, false);
    } else {
      const int next = h.rank[(k + 1) % K], prev = h.rank[(k - 1 + K) % K];
      for (int s = 1, send_g = k; s <= K; ++s) {
        const int recv_g = (k - s + K) % K;
        exchange(slice(send_g), bytes(send_g), next, slice(recv_g), bytes(recv_g), prev, comm);
        sent += double(bytes(send_g));
        for (size_t c = h.b[recv_g]; c < h.e[recv_g]; ++c)
          if (s < K) chunk(c, h.b[k], h.e[k], false);
          else chunk(c, h.b[k], c + 1, false);
        send_g = recv_g;
      }
    }
  }
  // All-gather over every rank of comm: each holder's finished chunks go round.
  for (int s = 1; s < size; ++s) {
    const int gs = h.index_of((rank - s + 1 + size) % size), gr = h.index_of((rank - s + size) % size);
    exchange(gs >= 0 ? slice(gs) : nullptr, gs >= 0 ? bytes(gs) : 0, (rank + 1) % size, gr >= 0 ? slice(gr) : nullptr,
             gr >= 0 ? bytes(gr) : 0, (rank - 1 + size) % size, comm);
    if (gs >= 0) sent += double(bytes(gs));
  }
  codec.decode(wire_.data(), n, out);
  return sent;
}

double RingSum::bytes_sent(const OuterCodec& codec, const std::vector<int>& owners, size_t n, int rank, int size) {
  if (owners.empty() || n == 0) return 0;
  double b = 0;
  schedule(codec, holders_of(owners), Chunks(n, owners.size()), rank, size, [&](size_t bytes) { b += double(bytes); });
  return b;
}

}  // namespace dipaco
