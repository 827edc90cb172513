#include "dipaco/train/diloco.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "dipaco/data/corpus.hpp"
#include "dipaco/dist/fault.hpp"
#include "dipaco/dist/watchdog.hpp"
#include "dipaco/train/divergence.hpp"

namespace dipaco {

OuterOptimizer::OuterOptimizer(const Deck& deck, const Topology& topo, const ParamLayout& layout, Kernels& k,
                               MPI_Comm world)
    : deck_(deck), topo_(topo), layout_(layout), k_(k), codec_(deck.dipaco.outer_dtype) {
  MPI_Comm_rank(world, &rank_);
  std::vector<int> all(topo.paths), world_ranks(topo.ranks);
  for (int p = 0; p < topo.paths; ++p) all[p] = p;
  for (int r = 0; r < topo.ranks; ++r) world_ranks[r] = r;
  // Private groups of DiLoCo replicas: averaged among the replicas of their
  // path (otherwise they would drift apart for good); never across paths.
  const bool replica_units = deck.dipaco.replica_mode == ReplicaMode::diloco && topo.ranks_per_path > 1;
  auto add_path_units = [&](const std::string& name, int group, int level) {
    for (int p = 0; p < topo.paths; ++p) {
      auto ranks = topo.ranks_of_path(p);
      bool mine = std::binary_search(ranks.begin(), ranks.end(), rank_);
      units_.push_back({name + ".P" + std::to_string(p), group, level, -1, p, {p}, mine, ranks, MPI_COMM_NULL, {}, {}});
    }
  };
  if (deck.dipaco.shared == SharedGroups::embeddings) units_.push_back({"embeddings", 0, -1, -1, -1, all, true, world_ranks, MPI_COMM_NULL, {}, {}});
  else if (replica_units) add_path_units("embeddings", 0, -1);
  for (int l = 0; l < topo.levels(); ++l) {
    const std::string level = "L" + std::to_string(l);
    if (topo.is_private(l)) {
      if (replica_units) add_path_units(level, 1 + l, l);
      continue;
    }
    for (int m = 0; m < topo.modules_per_level[l]; ++m) {
      auto ranks = topo.module_ranks(l, m);
      bool mine = std::binary_search(ranks.begin(), ranks.end(), rank_);
      units_.push_back({level + ".M" + std::to_string(m), 1 + l, l, m, -1, topo.paths_with_module(l, m), mine,
                        ranks, MPI_COMM_NULL, {}, {}});
    }
  }
  size_t largest = 0;
  for (auto& u : units_) {
    // Collective over the world, once at start-up: one communicator per unit.
    watched("creating a module communicator", [&] { MPI_Comm_split(world, u.mine ? 1 : MPI_UNDEFINED, rank_, &u.comm); });
    if (u.comm != MPI_COMM_NULL) MPI_Comm_set_name(u.comm, "dipaco module");
    size_t n = layout.groups[u.group].size;
    largest = std::max(largest, n);
    if (u.mine) u.anchor = DeviceBuffer<float>(k, n), u.momentum = DeviceBuffer<float>(k, n);
  }
  delta_dev_ = DeviceBuffer<float>(k, largest);
  flight_.resize(units_.size());
}

OuterOptimizer::~OuterOptimizer() {
  for (auto& u : units_)
    if (u.comm != MPI_COMM_NULL) MPI_Comm_free(&u.comm);
}

void OuterOptimizer::init_anchors(const std::vector<PathState*>& own) {
  for (auto& u : units_) {
    if (!u.mine) continue;
    const auto& g = layout_.groups[u.group];
    for (auto* p : own)
      if (std::count(u.paths.begin(), u.paths.end(), p->id)) {
        k_.copy(u.anchor.get(), p->params.get() + g.offset, g.size * sizeof(float));
        break;
      }
  }
}

bool OuterOptimizer::dropped(long index, int p) const {
  return fault_dropped(index, p) ||
         (index == left_out_round_ && std::binary_search(left_out_.begin(), left_out_.end(), p));
}

bool OuterOptimizer::reset_to_anchors(PathState& p) {
  if (deck_.dipaco.inner_steps == 0) return false;  // anchors that never move: the initial weights
  std::vector<const SyncUnit*> of_group(layout_.groups.size(), nullptr);
  for (const auto& u : units_)
    if (u.mine && std::count(u.paths.begin(), u.paths.end(), p.id)) of_group[u.group] = &u;
  if (std::count(of_group.begin(), of_group.end(), nullptr)) return false;
  for (size_t g = 0; g < of_group.size(); ++g)  // (anchors read from a checkpoint someone edited)
    if (!std::isfinite(k_.sum_squares(of_group[g]->anchor.get(), layout_.groups[g].size))) return false;
  for (size_t g = 0; g < of_group.size(); ++g)
    k_.copy(p.params.get() + layout_.groups[g].offset, of_group[g]->anchor.get(), layout_.groups[g].size * sizeof(float));
  p.reset = in_flight_;
  return true;
}

bool OuterOptimizer::fault_dropped(long index, int p) const {
  double prob = deck_.fault.drop_outer_prob;
  if (prob <= 0) return false;
  std::string key = "drop:" + std::to_string(index) + ":" + std::to_string(p);
  return double(hash64(key, deck_.run.seed) >> 11) / double(1ULL << 53) < prob;
}

std::vector<int> OuterOptimizer::term_owners(const SyncUnit& u, long index) const {
  const bool replicas = deck_.dipaco.replica_mode == ReplicaMode::diloco;
  auto comm_rank = [&](int world) { return int(std::lower_bound(u.ranks.begin(), u.ranks.end(), world) - u.ranks.begin()); };
  std::vector<int> owners;
  for (int p : u.paths) {
    if (dropped(index, p)) continue;
    const auto ranks = topo_.ranks_of_path(p);
    if (replicas) for (int r : ranks) owners.push_back(comm_rank(r));
    else owners.push_back(comm_rank(ranks[0]));
  }
  return owners;
}

// A unit's part of round `index`: the own paths' weighted outer gradients
// (with their residuals: error feedback), then the exact sum or the ring started.
void OuterOptimizer::post_unit(size_t ui, long index, const std::vector<PathState*>& own,
                               const std::vector<double>& shard_bytes, bool snapshot) {
  SyncUnit& u = units_[ui];
  InFlight& f = flight_[ui];
  const auto& g = layout_.groups[u.group];
  const size_t n = g.size;
  // Data-parallel ranks of a path hold the same weights: the first counts for
  // the path. DiLoCo replicas differ: each counts for an equal share.
  const bool replicas = deck_.dipaco.replica_mode == ReplicaMode::diloco;
  const bool contributes = replicas || topo_.rank_in_path(rank_) == 0;
  const double share = replicas ? 1.0 / topo_.ranks_per_path : 1.0;
  f.outer_lr = outer_lr_at(deck_, index);
  // Weights: shard sizes, renormalised over the paths present this round.
  f.total = 0;
  for (int p : u.paths)
    if (!dropped(index, p)) f.total += shard_bytes[p];
  const double scale = deck_.dipaco.sharing_scale == SharingScale::sqrt ? std::sqrt(double(u.paths.size())) : 1.0;
  f.scale = scale;
  f.fed.clear(), f.snapshots.clear();
  std::vector<const float*> terms;
  std::vector<RingTerm> ring_terms;
  const bool capped = deck_.dipaco.sharing_scale == SharingScale::capped;
  std::vector<float> norms(own.size());  // capped: each term's norm (its weight is in it)
  std::vector<const float*> norm_terms;
  size_t t = 0;
  for (auto* p : own) {
    if (!std::count(u.paths.begin(), u.paths.end(), p->id)) continue;
    if (snapshot) {  // where the path stood when the round was posted: the merge keeps what it learnt since
      f.snapshots.emplace_back(n);
      k_.to_host(f.snapshots.back().data(), p->params.get() + g.offset, n * sizeof(float));
    }
    if (!contributes || f.total <= 0 || dropped(index, p->id)) continue;
    k_.zero(delta_dev_.get(), n * sizeof(float));
    k_.weighted_difference(delta_dev_.get(), u.anchor.get(), p->params.get() + g.offset,
                           float(share * scale * shard_bytes[p->id] / f.total), n);
    if (capped) norms[t] = float(std::sqrt(k_.sum_squares(delta_dev_.get(), n))), norm_terms.push_back(&norms[t]);
    if (f.terms.size() <= t) f.terms.emplace_back(), f.errors.emplace_back();
    f.terms[t].resize(n);
    k_.to_host(f.terms[t].data(), delta_dev_.get(), n * sizeof(float));
    terms.push_back(f.terms[t].data());
    RingTerm rt{f.terms[t].data(), nullptr};
    if (error_feedback(deck_)) {
      f.errors[t].resize(n);
      k_.to_host(f.errors[t].data(), p->outer_error.get() + g.offset, n * sizeof(float));
      rt.error = f.errors[t].data();
      f.fed.push_back(p);
    }
    ring_terms.push_back(rt);
    ++t;
  }
  fault_point(deck_, "outer_allreduce");
  f.sum.resize(n);
  f.bytes = 0;
  const long max_terms = long(u.paths.size()) * (replicas ? topo_.ranks_per_path : 1);
  if (capped) f.bytes += exact_.sum(norm_terms, 1, max_terms, u.comm, &f.mean_norm);
  if (!codec_.lossy()) {
    // Exact: the same anchor at any rank count and placement of paths on ranks.
    f.bytes += exact_.sum(terms, n, max_terms, u.comm, f.sum.data());
  } else {
    // Compressed on the wire, re-encoded at every hop, in an order fixed by the paths alone.
    f.ring.start(codec_, ring_terms, term_owners(u, index), n, u.comm);
  }
}

// The unit's sum in hand: the outer step on its anchor, then every own path
// holding it takes the anchor (merge: plus what the path learnt since the post).
void OuterOptimizer::complete_unit(size_t ui, const std::vector<PathState*>& own, bool merge) {
  SyncUnit& u = units_[ui];
  InFlight& f = flight_[ui];
  const auto& g = layout_.groups[u.group];
  const size_t n = g.size;
  if (codec_.lossy()) {
    f.bytes = f.ring.finish(f.sum.data());
    for (size_t i = 0; i < f.fed.size(); ++i)
      k_.to_device(f.fed[i]->outer_error.get() + g.offset, f.errors[i].data(), n * sizeof(float));
  }
  // A non-finite sum never reaches the anchor (the trainer leaves diverged paths out; this is the backstop).
  if (f.total > 0 && !std::all_of(f.sum.begin(), f.sum.end(), [](float x) { return std::isfinite(x); }))
    throw DivergedError("the outer gradient of " + u.name + " is not finite: its anchor is left as it was and the job ends");
  if (f.total > 0 && deck_.dipaco.sharing_scale == SharingScale::capped) {
    double ss = 0;  // on the host, in order: the same factor on every rank
    for (float x : f.sum) ss += double(x) * x;
    const float s = float(capped_scale(u.paths.size(), f.mean_norm, std::sqrt(ss)));
    for (float& x : f.sum) x *= s;
    f.scale = s;
  }
  if (f.total > 0 && u.path < 0) {  // RoundStats' scales: the group shared by all, the modules
    if (u.level < 0) shared_scale_ = f.scale;
    else module_scales_.first += f.scale, ++module_scales_.second;
  }
  // A module with no path present keeps its anchor (and momentum).
  if (f.total > 0) {
    k_.to_device(delta_dev_.get(), f.sum.data(), n * sizeof(float));
    k_.outer_nesterov(u.anchor.get(), u.momentum.get(), delta_dev_.get(), n, float(f.outer_lr),
                      float(deck_.dipaco.outer_momentum));
  }
  size_t i = 0;
  for (auto* p : own) {
    if (!std::count(u.paths.begin(), u.paths.end(), p->id)) continue;
    float* w = p->params.get() + g.offset;
    if (!merge || p->reset) {  // reset during the flight: its snapshot is no longer where it stands
      if (merge) ++i;
      k_.copy(w, u.anchor.get(), n * sizeof(float));
      continue;
    }
    // params + (anchor - snapshot), on the host: rounds are rare.
    merge_now_.resize(n), merge_anchor_.resize(n);
    k_.to_host(merge_now_.data(), w, n * sizeof(float));
    k_.to_host(merge_anchor_.data(), u.anchor.get(), n * sizeof(float));
    const std::vector<float>& snap = f.snapshots.at(i++);
    for (size_t j = 0; j < n; ++j) merge_now_[j] += merge_anchor_[j] - snap[j];
    k_.to_device(w, merge_now_.data(), n * sizeof(float));
  }
}

RoundStats OuterOptimizer::round(long index, const std::vector<PathState*>& own, const std::vector<double>& shard_bytes) {
  RoundStats st = dropped_in(index);
  const double t0 = MPI_Wtime();
  if (!codec_.lossy()) {
    for (size_t ui = 0; ui < units_.size(); ++ui) {
      if (!units_[ui].mine) continue;
      post_unit(ui, index, own, shard_bytes, false);
      complete_unit(ui, own, false);
      st.bytes += flight_[ui].bytes;
      flight_[ui] = InFlight{};  // one unit's buffers at a time
    }
  } else {
    // Every unit's ring at once, so that their hops' latencies overlap.
    post_units(index, own, shard_bytes, false);
    st.bytes += complete_units(own, false);
  }
  k_.synchronize();
  st.seconds = MPI_Wtime() - t0;
  take_scales(st);
  return st;
}

void OuterOptimizer::take_scales(RoundStats& st) {
  st.shared_scale = shared_scale_;
  st.module_scale = module_scales_.second ? module_scales_.first / module_scales_.second : NAN;
  shared_scale_ = NAN, module_scales_ = {0, 0};
}

// Until every ring is done: a wait on the first one still waiting, then every
// ring moved on by what has arrived meanwhile (never one unit after another).
void OuterOptimizer::drive_rings() {
  for (;;) {
    RingSum* waiting = nullptr;
    for (size_t ui = 0; ui < units_.size(); ++ui)
      if (units_[ui].mine && !flight_[ui].ring.advance() && !waiting) waiting = &flight_[ui].ring;
    if (!waiting) return;
    waiting->wait();
  }
}

void OuterOptimizer::post_units(long index, const std::vector<PathState*>& own, const std::vector<double>& shard_bytes,
                                bool snapshot) {
  for (size_t ui = 0; ui < units_.size(); ++ui)
    if (units_[ui].mine) post_unit(ui, index, own, shard_bytes, snapshot);
}

// Every posted unit's rings finished and its round completed; returns the bytes sent.
double OuterOptimizer::complete_units(const std::vector<PathState*>& own, bool merge) {
  drive_rings();
  double bytes = 0;
  for (size_t ui = 0; ui < units_.size(); ++ui) {
    if (!units_[ui].mine) continue;
    complete_unit(ui, own, merge);
    bytes += flight_[ui].bytes;
  }
  k_.synchronize();
  for (auto& f : flight_) f = InFlight{};
  return bytes;
}

RoundStats OuterOptimizer::dropped_in(long index) const {
  RoundStats st;
  for (int p = 0; p < topo_.paths; ++p)
    if (fault_dropped(index, p)) st.dropped.push_back(p);
    else if (dropped(index, p)) st.diverged.push_back(p);
  return st;
}

void OuterOptimizer::post(long index, const std::vector<PathState*>& own, const std::vector<double>& shard_bytes) {
  const double t0 = MPI_Wtime();
  posted_ = dropped_in(index);
  post_units(index, own, shard_bytes, true);
  in_flight_ = true;
  posted_.seconds = MPI_Wtime() - t0;
}

void OuterOptimizer::progress() {
  if (!in_flight_) return;
  const double t0 = MPI_Wtime();
  for (size_t ui = 0; ui < units_.size(); ++ui)
    if (units_[ui].mine) flight_[ui].ring.advance();
  posted_.seconds += MPI_Wtime() - t0;
}

RoundStats OuterOptimizer::complete(const std::vector<PathState*>& own) {
  const double t0 = MPI_Wtime();
  posted_.bytes += complete_units(own, true);
  take_scales(posted_);
  for (auto* p : own) p->reset = false;
  in_flight_ = false;
  posted_.seconds += MPI_Wtime() - t0;
  return posted_;
}

}  // namespace dipaco
