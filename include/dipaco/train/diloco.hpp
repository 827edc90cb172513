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

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>
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
  std::vector<int> dropped;   // paths whose outer gradient was left out (fault.drop_outer_prob)
  std::vector<int> diverged;  // paths left out because they diverged since the last round
  // dipaco.sharing_scale: the factor of the group shared by all paths and the mean over the
  // modules this rank holds (NaN where it holds none of them).
  double shared_scale = NAN, module_scale = NAN;
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
  // An overlapped round (dipaco.overlap_steps): post() starts every unit's
  // ring from the paths' weights now, progress() (between inner steps) moves
  // the rings on, complete() finishes them, steps the anchors and merges:
  // every path's copy becomes anchor + (its weights now - its weights at the post).
  void post(long index, const std::vector<PathState*>& own, const std::vector<double>& shard_bytes);
  void progress();
  RoundStats complete(const std::vector<PathState*>& own);
  bool in_flight() const { return in_flight_; }
  // Whether path p's contribution is dropped in round `index` (same on every rank):
  // by fault.drop_outer_prob, or left out with leave_out().
  bool dropped(long index, int p) const;
  // Round `index` leaves out these paths (sorted; agreed by every rank): they
  // diverged since the last round. Their weights are renormalised away as a drop's.
  void leave_out(long index, std::vector<int> paths) { left_out_round_ = index, left_out_ = std::move(paths); }
  // Path p's weights back to the anchors of every group it holds; false (and
  // nothing copied) when a group has no anchor on this rank (no outer rounds,
  // a private level). An overlapped round then gives it the new anchors, no merge.
  bool reset_to_anchors(PathState& p);

  std::vector<SyncUnit>& units() { return units_; }
  // dipaco.sharing_scale=capped: the factor for an average of k outer
  // gradients whose (weighted) mean norm is mean_norm and whose sum has
  // norm sum_norm: sqrt(k) when they are orthogonal (averaging shrank the norm
  // by sqrt(k)), 1 when they agree (it shrank nothing), never above sqrt(k).
  static double capped_scale(size_t k, double mean_norm, double sum_norm) {
    const double cap = std::sqrt(double(k));
    if (!(sum_norm > 0)) return cap;
    return std::clamp(mean_norm / sum_norm, 1.0, cap);
  }
  // The outer learning rate of round `index` (from 0): dipaco.outer_lr, ramped
  // linearly over the first dipaco.outer_warmup rounds (few rounds overshoot with
  // momentum at the full rate from the start).
  static double outer_lr_at(const Deck& deck, long index) {
    const int w = deck.dipaco.outer_warmup;
    return w > 0 && index + 1 < w ? deck.dipaco.outer_lr * double(index + 1) / w : deck.dipaco.outer_lr;
  }
  // Whether the paths keep their outer gradients' residuals (PathState::outer_error).
  // (Inline: the checkpoint readers use it without the rest of the optimizer.)
  static bool error_feedback(const Deck& deck) {
    return deck.dipaco.outer_dtype != OuterDtype::fp32 && deck.dipaco.error_feedback == ErrorFeedback::on;
  }

 private:
  const Deck& deck_;
  const Topology& topo_;
  const ParamLayout& layout_;
  Kernels& k_;
  int rank_;
  std::vector<SyncUnit> units_;
  // One unit's round between its post and its completion.
  struct InFlight {
    double total = 0, bytes = 0;                      // the weights' sum (0: no path present); bytes sent
    double outer_lr = 0;                              // this round's (outer_lr_at)
    float mean_norm = 0;                              // sharing_scale capped: the weighted mean of the paths' norms
    double scale = 1;                                 // the factor applied (sharing_scale)
    std::vector<std::vector<float>> terms, errors;   // per own contributing path: outer gradient, residuals
    std::vector<PathState*> fed;                      // whose residuals `errors` are
    std::vector<std::vector<float>> snapshots;        // per own path holding the unit: its weights at the post
    std::vector<float> sum;
    RingSum ring;
  };
  void drive_rings();
  void post_units(long index, const std::vector<PathState*>& own, const std::vector<double>& shard_bytes, bool snapshot);
  double complete_units(const std::vector<PathState*>& own, bool merge);
  void post_unit(size_t ui, long index, const std::vector<PathState*>& own, const std::vector<double>& shard_bytes,
                 bool snapshot);
  void complete_unit(size_t ui, const std::vector<PathState*>& own, bool merge);
  RoundStats dropped_in(long index) const;
  bool fault_dropped(long index, int p) const;
  long left_out_round_ = -1;
  std::vector<int> left_out_;
  DeviceBuffer<float> delta_dev_;
  ExactSum exact_;
  OuterCodec codec_;
  std::vector<InFlight> flight_;  // per unit
  bool in_flight_ = false;
  RoundStats posted_;
  std::vector<float> merge_now_, merge_anchor_;
  double shared_scale_ = NAN;                      // this round's factors so far (take_scales)
  std::pair<double, int> module_scales_{0, 0};    // their sum and count
  void take_scales(RoundStats& st);
  // The communicator rank of each term of unit u in round `index`, in term order (path, then replica).
  std::vector<int> term_owners(const SyncUnit& u, long index) const;
};

}  // namespace dipaco
