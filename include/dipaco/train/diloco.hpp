// DiLoCo outer rounds, per module. A sync unit is a parameter group shared by
// several paths: the embedding group (when shared by all paths) or a module
// (level l, index m); a private group averaged among the DiLoCo replicas of
// one path is a unit of that path alone (`path` >= 0). A private level
// (dipaco.private_levels) has no unit otherwise: it is never communicated.
// Each unit has ONE communicator holding exactly the ranks
// whose paths contain it, an anchor (the weights every path starts the round
// from) and an outer Nesterov momentum, replicated on those ranks.
#pragma once
#include <mpi.h>

#include <string>
#include <vector>

#include "dipaco/io/deck.hpp"
#include "dipaco/train/exact_sum.hpp"
#include "dipaco/train/outer_codec.hpp"
#include "dipaco/train/ring_sum.hpp"
#include "dipaco/model/kernels.hpp"
#include "dipaco/model/model.hpp"
#include "dipaco/train/path_state.hpp"
#include "dipaco/dist/topology.hpp"

namespace dipaco {

struct SyncUnit {
  std::string name;        // "embeddings", "L1.M0", or a path's own "embeddings.P3" / "L1.P3"
  int group = 0;           // index into ParamLayout::groups
  int level = -1, module = -1;
  int path = -1;           // the one path whose private group this is (-1: shared)
  std::vector<int> paths;  // every path that contains it
  bool mine = false;       // this rank holds a path that contains it
  std::vector<int> ranks;  // the world ranks of comm, in its rank order
  MPI_Comm comm = MPI_COMM_NULL;
  DeviceBuffer<float> anchor, momentum;
};

struct RoundStats {
  double seconds = 0, bytes = 0;
  std::vector<int> dropped;  // paths whose outer gradient was left out
};

class OuterOptimizer {
 public:
  OuterOptimizer(const Deck& deck, const Topology& topo, const ParamLayout& layout, Kernels& k, MPI_Comm world);
  ~OuterOptimizer();
  OuterOptimizer(const OuterOptimizer&) = delete;
  OuterOptimizer& operator=(const OuterOptimizer&) = delete;

  // Anchors start as the paths' (identical) initial weights.
  void init_anchors(const std::vector<PathState*>& own);
  // One outer round. shard_bytes holds every path's shard size (all P).
  RoundStats round(long index, const std::vector<PathState*>& own, const std::vector<double>& shard_bytes);
  // Whether path p's contribution is dropped in round `index` (same on every rank).
  bool dropped(long index, int p) const;

  std::vector<SyncUnit>& units() { return units_; }
  // Whether the paths keep their outer gradients' residuals (PathState::outer_error).
  static bool error_feedback(const Deck& deck);

 private:
  const Deck& deck_;
  const Topology& topo_;
  const ParamLayout& layout_;
  Kernels& k_;
  int rank_;
  std::vector<SyncUnit> units_;
  DeviceBuffer<float> delta_dev_;
  std::vector<float> sum_host_;
  std::vector<std::vector<float>> terms_host_;  // per own path: its weighted outer gradient
  ExactSum exact_;
  OuterCodec codec_;
  RingSum ring_;
  std::vector<std::vector<float>> errors_host_;  // per own path: its residuals of the unit being summed
  // The communicator rank of each term of unit u in round `index`, in term order (path, then replica).
  std::vector<int> term_owners(const SyncUnit& u, long index) const;
};

}  // namespace dipaco
