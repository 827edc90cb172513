// The training loop: each rank trains its paths for H inner steps (data
// parallel inside a path over the path communicator), then the outer round
// syncs every shared module. Evaluates validation bits per byte, logs
// progress and metrics, and reports communication.
#pragma once
#include <mpi.h>

#include <cmath>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "dipaco/io/deck.hpp"
#include "dipaco/train/diloco.hpp"
#include "dipaco/model/kernels.hpp"
#include "dipaco/train/metrics.hpp"
#include "dipaco/model/model.hpp"
#include "dipaco/train/path_state.hpp"
#include "dipaco/data/shards.hpp"
#include "dipaco/dist/device_sum.hpp"
#include "dipaco/dist/stop_agreement.hpp"
#include "dipaco/dist/topology.hpp"
#include "dipaco/train/schedule.hpp"

namespace dipaco {

// MPI_Pcontrol levels around the stretch between two round boundaries, for a
// profiling library that counts collectives (tests/integration/collectives.sh):
// inside it a rank may only talk to the ranks of its own path.
constexpr int kBetweenRounds = 10, kAtRoundBoundary = 11;

struct EvalResult {
  double bpb = 0;                 // overall, weighted by tokens
  std::vector<double> path_bpb;   // per path (NaN where a path has no validation data)
  std::vector<double> path_tokens;  // the targets scored: bytes when the tokens' bytes are known (set_token_bytes)
};

struct TrainSummary {
  EvalResult final_eval;
  StopRequest stop;  // set when a stop request or a limit ended it early (checkpoint written)
  double wall_seconds = 0, sync_seconds = 0, sync_bytes = 0, dp_bytes = 0, path_bytes = 0;
  long tokens = 0, rounds = 0, dropped = 0;
  long diverged = 0;  // paths left out of an outer round because they diverged (one per path and round)
  long rolled_back = 0;  // dense runs and the warm start: divergences undone by going back to the last good weights
  double checkpoint_seconds = 0;  // writing checkpoints, all of them
  long checkpoints = 0;
};

ModelShape model_shape(const Deck& deck);

class Checkpointer;

// Which training a trainer does: the warm start (one dense path, before the
// paths exist: no fault injection of the paths) or the paths themselves.
enum class TrainerRole { warm_start, paths };

// What waits for the next round boundary, where the world reduces it
// (round_boundary.cpp): between two boundaries a rank talks only to its path.
struct PendingMetrics {
  struct Eval {
    long step;
    double elapsed;
    std::vector<double> sums;  // this rank's share of [loss sums | token counts] per path
  };
  struct Round {
    long round, step;
    double seconds, bytes;
    long dropped, diverged;
    double shared_scale, module_scale;  // RoundStats'
  };
  long from = 0;                      // the last boundary (first step of loss): what rank 0 knows of every path
  std::vector<double> loss;           // [steps x P]: this rank's share of each path's loss
  std::vector<Eval> evals;
  std::vector<Round> rounds;          // completed since the last boundary (overlap: up to two)
  std::vector<double> chunk_seconds;  // [chunks x P] seconds of inner steps per chunk (own paths)

  void clear(long boundary) {
    loss.clear(), evals.clear(), rounds.clear(), chunk_seconds.clear();
    from = boundary;
  }
};

// Where training stands: saved in checkpoints, restored on resume.
struct Progress {
  long step = 0, rounds = 0;
  double elapsed = 0;
  std::vector<double> eval_step, eval_bpb;
  std::vector<double> eval_path_bpb;  // [evaluations x paths], row-major
};

class Trainer {
 public:
  // train/val: one shard per path (all P); shard_bytes: every path's tokens + 1
  // (DiLoCo's weights), or empty: summed from train, which then holds every
  // path's documents, not only this rank's. run_dir "" writes no files.
  Trainer(const Deck& deck, MPI_Comm world, Kernels& k, const std::vector<Shard>& train, const std::vector<Shard>& val,
          const std::string& run_dir, bool verbose = true, TrainerRole role = TrainerRole::paths,
          const std::vector<double>& shard_bytes = {});
  ~Trainer();
  // Trains up to step `until` (-1: train.steps), with a checkpoint there.
  TrainSummary run(long until = -1);
  EvalResult evaluate();
  // New shards for every path (re-routing); the DiLoCo weights follow their sizes.
  void set_shards(const std::vector<Shard>& train, const std::vector<Shard>& val, const std::vector<double>& shard_bytes = {});
  // Starts every path (and every anchor) from these weights, e.g. a warm start.
  void set_initial_params(const std::vector<float>& params);
  // Per-token losses of path p on local_batch() windows of T tokens: tok, tgt
  // and out hold local_batch() * T values (host memory).
  void window_losses(PathState& p, const std::vector<int32_t>& tok, const std::vector<int32_t>& tgt, std::vector<float>& out);
  int local_batch() const { return local_batch_; }

  const Topology& topology() const { return topo_; }
  const ParamLayout& layout() const { return model_->layout(); }
  std::vector<PathState>& paths() { return paths_; }
  OuterOptimizer& outer() { return *outer_; }
  const std::vector<double>& shard_bytes() const { return shard_bytes_; }
  Progress& progress() { return progress_; }
  const Deck& deck() const { return deck_; }
  // The UTF-8 bytes of each token id (a SentencePiece vocabulary): evaluations
  // then divide by the bytes the scored targets stand for, not their count.
  void set_token_bytes(std::vector<uint8_t> b) { token_bytes_ = std::move(b); }
  const std::vector<uint8_t>& token_bytes() const { return token_bytes_; }
  Kernels& kernels() { return k_; }
  MPI_Comm world() const { return world_; }
  void set_checkpointer(Checkpointer* c) { checkpointer_ = c; }

 private:
  void inner_steps(long from, long to);  // every path of this rank, steps from..to
  void inner_step(PathState& p, std::vector<double>& losses);
  double local_gradients(PathState& p, int first);
  double data_parallel_gradients(PathState& p, bool poisoned);
  double micro_batch_gradients(PathState& p);
  void finish_step(PathState& p, double loss);
  void diverged(PathState& p, long step, const std::string& why);
  void agree_diverged(long step, long round);
  void open_metrics();
  // The named steps of run().
  void start_session();
  EvalResult back_to_best();
  void save_checkpoint();
  // Dense training and the warm start have no anchors: a divergence rolls the
  // path back to its last good weights (the last checkpoint, or the session's
  // start) and skips ahead; past train.diverge_limit the job ends.
  void keep_rollback_point();
  long roll_back(PathState& p);  // the step it went back to; -1: nothing to go back to
  void say_stopped(long step, StopRequest stop) const;
  // The round at `step`: run now, or posted (overlap) and completed by complete_round.
  void outer_round(long step, TrainSummary& sum, bool overlap);
  void complete_round(long step, TrainSummary& sum);
  void note_round(const RoundStats& rs, long round, long step, TrainSummary& sum);
  // Between rounds and at their boundaries (round_boundary.cpp).
  std::vector<double> local_eval_sums();  // [2P]: loss and token sums of this rank's windows
  EvalResult eval_result(const std::vector<double>& sums) const;
  void evaluate_between_rounds(long step);
  void note_losses(long from, long to, const std::vector<std::vector<double>>& losses);
  void print_progress(long step);
  // The world meeting; returns the agreed stop request, and the last pending evaluation in *last_eval.
  StopRequest round_boundary(long step, StopRequest wanted, EvalResult* last_eval = nullptr);
  StopRequest stop_wanted(const RoundSchedule& plan, long step) const;  // this rank's request
  long agreed_stop_step(const RoundSchedule& plan, long step);          // -1 until the world agreed
  void summarize(TrainSummary& sum, long step);
  void keep_best(const EvalResult& e);  // train.early_stop = path
  void restore_best();

  const Deck& deck_;
  MPI_Comm world_, path_comm_ = MPI_COMM_NULL;
  int rank_ = 0, world_size_ = 1;
  Kernels& k_;
  Topology topo_;
  ModelShape shape_;
  Precision precision_;
  int local_batch_;
  bool replicas_ = false;  // dipaco.replica_mode = diloco
  int micro_ = 0;          // train.micro_batch (data mode only)
  std::vector<std::vector<float>> micro_terms_;
  ExactSum exact_;
  std::unique_ptr<Model> model_;
  std::vector<PathState> paths_;
  std::vector<double> shard_bytes_;
  std::unique_ptr<OuterOptimizer> outer_;
  DeviceBuffer<float> grads_;
  DeviceBuffer<int32_t> tok_dev_, tgt_dev_;
  std::vector<int32_t> tok_, tgt_;
  std::vector<uint8_t> token_bytes_;
  struct RollbackPoint {
    DeviceBuffer<float> params, m, v;
    long step = -1;  // -1: none kept
  };
  std::vector<RollbackPoint> rollback_;  // per own path (dense runs and the warm start only)
  long rolled_back_ = 0;  // empty: a target is one byte (bytes) or one token (token files)
  std::vector<float> grad_host_;
  std::unique_ptr<DeviceSum> device_sum_;  // the path's gradient sum on the GPUs (NCCL), or null: MPI
  std::unique_ptr<MetricsFile> metrics_;
  bool verbose_;
  TrainerRole role_;
  Progress progress_;
  Checkpointer* checkpointer_ = nullptr;
  std::string run_dir_;
  double path_bytes_ = 0;
  double checkpoint_seconds_ = 0;
  long checkpoints_ = 0;
  double t0_ = 0;  // MPI_Wtime() at step 0 of the run (the restored elapsed time subtracted)
  PendingMetrics pending_;
  std::unique_ptr<StopAgreement> stop_;
  std::vector<DeviceBuffer<float>> best_;  // per own path: weights at its best validation bpb
  std::vector<double> best_bpb_;
  std::vector<long> diverged_count_;  // per path: divergence events this session (train.diverge_limit)
};

}  // namespace dipaco
