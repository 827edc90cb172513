#include "dipaco/train/diloco.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "dipaco/dist/pieces.hpp"
#include "dipaco/model/bf16.hpp"
#include "dipaco/data/corpus.hpp"
#include "dipaco/dist/fault.hpp"
#include "dipaco/dist/watchdog.hpp"

namespace dipaco {

OuterOptimizer::OuterOptimizer(const Deck& deck, const Topology& topo, const ParamLayout& layout, Kernels& k,
                               MPI_Comm world)
    : deck_(deck), topo_(topo), layout_(layout), k_(k) {
  MPI_Comm_rank(world, &rank_);
  std::vector<int> all(topo.paths);
  for (int p = 0; p < topo.paths; ++p) all[p] = p;
  // Private groups of DiLoCo replicas: averaged among the replicas of their
  // path (otherwise they would drift apart for good); never across paths.
  const bool replica_units = deck.dipaco.replica_mode == "diloco" && topo.ranks_per_path > 1;
  auto add_path_units = [&](const std::string& name, int group, int level) {
    for (int p = 0; p < topo.paths; ++p) {
      auto ranks = topo.ranks_of_path(p);
      bool mine = std::binary_search(ranks.begin(), ranks.end(), rank_);
      units_.push_back({name + ".P" + std::to_string(p), group, level, -1, p, {p}, mine, MPI_COMM_NULL, {}, {}});
    }
  };
  if (deck.dipaco.shared == "embeddings") units_.push_back({"embeddings", 0, -1, -1, -1, all, true, MPI_COMM_NULL, {}, {}});
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
                        MPI_COMM_NULL, {}, {}});
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
  delta_host_.resize(largest), sum_host_.resize(largest);
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
  double prob = deck_.fault.drop_outer_prob;
  if (prob <= 0) return false;
  std::string key = "drop:" + std::to_string(index) + ":" + std::to_string(p);
  return double(hash64(key, deck_.run.seed) >> 11) / double(1ULL << 53) < prob;
}

double OuterOptimizer::bytes_per_round() const {
  double b = 0, width = deck_.dipaco.outer_dtype == "bf16" ? 2 : 8;  // fp32 outer gradients travel as int64 fixed point
  for (const auto& u : units_)
    if (u.mine) b += width * layout_.groups[u.group].size;
  return b;
}

RoundStats OuterOptimizer::round(long index, const std::vector<PathState*>& own, const std::vector<double>& shard_bytes) {
  RoundStats st;
  double t0 = MPI_Wtime();
  for (int p = 0; p < topo_.paths; ++p)
    if (dropped(index, p)) st.dropped.push_back(p);
  const bool bf16 = deck_.dipaco.outer_dtype == "bf16";
  // Data-parallel ranks of a path hold the same weights: the first counts for
  // the path. DiLoCo replicas differ: each counts for an equal share.
  const bool replicas = deck_.dipaco.replica_mode == "diloco";
  const bool contributes = replicas || topo_.rank_in_path(rank_) == 0;
  const double share = replicas ? 1.0 / topo_.ranks_per_path : 1.0;

  for (auto& u : units_) {
    if (!u.mine) continue;
    const auto& g = layout_.groups[u.group];
    const size_t n = g.size;
    // Weights: shard sizes, renormalised over the paths present this round.
    double total = 0;
    for (int p : u.paths)
      if (!dropped(index, p)) total += shard_bytes[p];
    double scale = deck_.dipaco.sharing_scale == "sqrt" ? std::sqrt(double(u.paths.size())) : 1.0;

    // Each own path's weighted outer gradient, in path order.
    std::vector<const float*> terms;
    size_t t = 0;
    if (contributes && total > 0)
      for (auto* p : own)
        if (std::count(u.paths.begin(), u.paths.end(), p->id) && !dropped(index, p->id)) {
          k_.zero(delta_dev_.get(), n * sizeof(float));
          k_.weighted_difference(delta_dev_.get(), u.anchor.get(), p->params.get() + g.offset,
                                 float(share * scale * shard_bytes[p->id] / total), n);
          if (terms_host_.size() <= t) terms_host_.emplace_back();
          terms_host_[t].resize(n);
          k_.to_host(terms_host_[t].data(), delta_dev_.get(), n * sizeof(float));
          terms.push_back(terms_host_[t++].data());
        }
    fault_point(deck_, "outer_allreduce");

    if (!bf16) {
      // Exact: the same anchor at any rank count and placement of paths on ranks.
      const long max_terms = long(u.paths.size()) * (replicas ? topo_.ranks_per_path : 1);
      st.bytes += exact_.sum(terms, n, max_terms, u.comm, sum_host_.data());
    } else {
      std::fill(delta_host_.begin(), delta_host_.begin() + n, 0.0f);
      for (const float* term : terms)
        for (size_t i = 0; i < n; ++i) delta_host_[i] += term[i];
      // bf16 on the wire, summed in fp32 in rank order (the same on every rank).
      int size;
      MPI_Comm_size(u.comm, &size);
      send_bf16_.resize(n), recv_bf16_.resize(n * size);
      for (size_t i = 0; i < n; ++i) send_bf16_[i] = to_bf16(delta_host_[i]);
      watched("an outer round's bf16 all-gather", [&] {
        allgather_pieces(send_bf16_.data(), recv_bf16_.data(), n, MPI_UINT16_T, u.comm);
      });
      std::fill(sum_host_.begin(), sum_host_.begin() + n, 0.0f);
      for (int r = 0; r < size; ++r)
        for (size_t i = 0; i < n; ++i) sum_host_[i] += from_bf16(recv_bf16_[size_t(r) * n + i]);
      st.bytes += 2.0 * n;
    }
    // A module with no path present keeps its anchor (and momentum).
    if (total > 0) {
      k_.to_device(delta_dev_.get(), sum_host_.data(), n * sizeof(float));
      k_.outer_nesterov(u.anchor.get(), u.momentum.get(), delta_dev_.get(), n, float(deck_.dipaco.outer_lr),
                        float(deck_.dipaco.outer_momentum));
    }
    for (auto* p : own)
      if (std::count(u.paths.begin(), u.paths.end(), p->id))
        k_.copy(p->params.get() + g.offset, u.anchor.get(), n * sizeof(float));
  }
  k_.synchronize();
  st.seconds = MPI_Wtime() - t0;
  return st;
}

}  // namespace dipaco
