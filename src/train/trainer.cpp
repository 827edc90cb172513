#include "dipaco/train/trainer.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "dipaco/data/padded_batches.hpp"
#include "dipaco/dist/device_sum.hpp"
#include "dipaco/dist/pieces.hpp"
#include "dipaco/io/checkpoint.hpp"
#include "dipaco/dist/fault.hpp"
#include "dipaco/io/files.hpp"
#include "dipaco/io/log.hpp"
#include "dipaco/model/optimizer.hpp"
#include "dipaco/dist/signals.hpp"
#include "dipaco/dist/watchdog.hpp"
#include "dipaco/train/divergence.hpp"

#include <fstream>
#include <sstream>

namespace dipaco {

ModelShape model_shape(const Deck& deck) {
  ModelShape s;
  s.C = deck.model.d_model, s.L = deck.model.n_layers, s.H = deck.model.n_heads, s.T = deck.model.context;
  s.V = deck.model.vocab_size > 0 ? deck.model.vocab_size : 256;  // 0: the data's, resolved at prepare (bytes: 256)
  s.layers_per_level = deck.model.layers_per_level;
  return s;
}

Trainer::Trainer(const Deck& deck, MPI_Comm world, Kernels& k, const std::vector<Shard>& train,
                 const std::vector<Shard>& val, const std::string& run_dir, bool verbose, TrainerRole role,
                 const std::vector<double>& shard_bytes)
    : deck_(deck), world_(world), k_(k), shape_(model_shape(deck)), verbose_(verbose), role_(role) {
  MPI_Comm_rank(world, &rank_);
  MPI_Comm_size(world, &world_size_);
  topo_ = make_topology(deck.dipaco.modules_per_level, world_size_, deck.dipaco.private_levels);
  replicas_ = deck.dipaco.replica_mode == ReplicaMode::diloco;
  micro_ = replicas_ ? 0 : deck.train.micro_batch;
  if (!replicas_ && micro_ == 0 && deck.train.batch_size % topo_.ranks_per_path != 0) {
    // A batch the path's ranks cannot split evenly (the warm start of 16 sequences on 64 ranks) is
    // dealt out in micro-batches of one sequence, summed exactly; ranks beyond the batch add nothing.
    micro_ = 1;
    if (verbose)
      say("note: train.batch_size = %d is not divisible by the %d ranks of a path: micro-batches of 1 "
          "sequence dealt to them in turn (set train.micro_batch to choose)\n",
          deck.train.batch_size, topo_.ranks_per_path);
  }
  precision_ = deck.train.precision;
  // Data parallel: the path's batch is split over its ranks, or into fixed micro-batches dealt to them in
  // turn (train.micro_batch). DiLoCo replicas: each trains a whole batch of its own.
  local_batch_ = replicas_ ? deck.train.batch_size : micro_ > 0 ? micro_ : deck.train.batch_size / topo_.ranks_per_path;
  model_ = std::make_unique<Model>(k, shape_, local_batch_, precision_);
  const auto& layout = model_->layout();

  // Path communicator: the ranks that train the same path (data parallel).
  std::vector<int> mine = topo_.paths_of_rank(rank_);
  watched("creating the path communicator", [&] {
    MPI_Comm_split(world, topo_.ranks >= topo_.paths ? mine[0] : rank_, rank_, &path_comm_);
  });
  MPI_Comm_set_name(path_comm_, "dipaco path");  // named for profiling tools (tests/integration/collectives.sh)
  if (topo_.ranks_per_path > 1 && !replicas_ && micro_ == 0) {
    std::string why;
    watched("setting up the path's gradient sum",
            [&] { device_sum_ = make_device_sum(deck.run.path_allreduce, k, path_comm_, &why); });
    if (verbose && k.device_memory())
      say("path gradient all-reduce: %s\n", device_sum_ ? "NCCL, on the GPUs" : ("MPI through host memory: " + why).c_str());
  }

  // Every path starts from bitwise the same weights (a common seed).
  std::vector<float> init = init_params(shape_, layout, deck.run.seed);
  paths_.resize(mine.size());
  for (size_t i = 0; i < mine.size(); ++i) {
    PathState& ps = paths_[i];
    ps.id = mine[i];
    ps.modules = topo_.path_modules(ps.id);
    ps.params = DeviceBuffer<float>(k, layout.total);
    ps.m = DeviceBuffer<float>(k, layout.total);
    ps.v = DeviceBuffer<float>(k, layout.total);
    if (OuterOptimizer::error_feedback(deck)) {
      ps.outer_error = DeviceBuffer<float>(k, layout.total);
      k.zero(ps.outer_error.get(), layout.total * sizeof(float));
    }
    k.to_device(ps.params.get(), init.data(), init.size() * sizeof(float));
    ps.check = DivergenceCheck(deck.train.diverge_factor);
  }
  diverged_count_.assign(topo_.paths, 0);
  set_shards(train, val, shard_bytes);
  stop_ = std::make_unique<StopAgreement>(world);
  grads_ = DeviceBuffer<float>(k, layout.total);
  const size_t N = size_t(local_batch_) * shape_.T;
  tok_dev_ = DeviceBuffer<int32_t>(k, N), tgt_dev_ = DeviceBuffer<int32_t>(k, N);
  tok_.resize(N), tgt_.resize(N);
  outer_ = std::make_unique<OuterOptimizer>(deck, topo_, layout, k, world);
  std::vector<PathState*> own;
  for (auto& p : paths_) own.push_back(&p);
  outer_->init_anchors(own);
  run_dir_ = run_dir;
}

void Trainer::open_metrics() {
  if (rank_ != 0 || run_dir_.empty()) return;
  const std::string path = run_dir_ + "/metrics.jsonl";
  if (progress_.step == 0) {
    metrics_ = std::make_unique<MetricsFile>(path, false);
    return;
  }
  // Resumed: keep the records up to the restored step, then append.
  std::ifstream in(path);
  std::ostringstream kept;
  std::string line;
  while (std::getline(in, line)) {
    auto at = line.find("\"step\":");
    if (at != std::string::npos && std::atol(line.c_str() + at + 7) > progress_.step) continue;
    kept << line << "\n";
  }
  write_file_atomic(path, kept.str());  // checked: a full disk stops the run here, not later
  metrics_ = std::make_unique<MetricsFile>(path, true);
}

void Trainer::set_shards(const std::vector<Shard>& train, const std::vector<Shard>& val,
                         const std::vector<double>& shard_bytes) {
  if (int(train.size()) != topo_.paths || int(val.size()) != topo_.paths ||
      (!shard_bytes.empty() && int(shard_bytes.size()) != topo_.paths))
    throw std::runtime_error("internal: need one training and one validation shard per path");
  shard_bytes_ = shard_bytes;
  if (shard_bytes_.empty())
    for (int p = 0; p < topo_.paths; ++p) shard_bytes_.push_back(dipaco::shard_bytes(train[p]));
  // Checked for every path on every rank, so that all ranks refuse together.
  std::string empty;
  int n_empty = 0;
  for (int p = 0; p < topo_.paths; ++p)
    if (shard_bytes_[p] < 2 && ++n_empty <= 8) empty += (empty.empty() ? "" : ", ") + std::to_string(p);
  if (n_empty > 0)
    throw DeckError(std::to_string(n_empty) + " of " + std::to_string(topo_.paths) + " paths received no training documents (path " +
                    empty + (n_empty > 8 ? ", ..." : "") + "); use fewer paths, another route.method or a larger corpus");
  for (auto& ps : paths_) {
    ps.shard_bytes = shard_bytes_[ps.id];
    ps.train = make_stream(train[ps.id]);
    ps.val = make_stream(val[ps.id]);
    validation_windows(ps.val, shape_.T, deck_.eval.batches * deck_.train.batch_size, ps.val_starts);
  }
}

void Trainer::set_initial_params(const std::vector<float>& params) {
  if (params.size() != model_->layout().total) throw std::runtime_error("internal: initial weights of the wrong size");
  std::vector<PathState*> own;
  for (auto& p : paths_) k_.to_device(p.params.get(), params.data(), params.size() * sizeof(float)), own.push_back(&p);
  outer_->init_anchors(own);
}

void Trainer::window_losses(PathState& p, const std::vector<int32_t>& tok, const std::vector<int32_t>& tgt,
                            std::vector<float>& out) {
  k_.to_device(tok_dev_.get(), tok.data(), tok.size() * sizeof(int32_t));
  k_.to_device(tgt_dev_.get(), tgt.data(), tgt.size() * sizeof(int32_t));
  model_->forward(p.params.get(), tok_dev_.get(), tgt_dev_.get());
  out.resize(tok.size());
  k_.to_host(out.data(), model_->token_losses(), out.size() * sizeof(float));
}

void Trainer::keep_best(const EvalResult& e) {
  if (deck_.train.early_stop != EarlyStop::path) return;
  if (best_.empty())
    for (size_t i = 0; i < paths_.size(); ++i) best_.emplace_back(k_, model_->layout().total), best_bpb_.push_back(INFINITY);
  for (size_t i = 0; i < paths_.size(); ++i) {
    double b = e.path_bpb[paths_[i].id];
    if (!(b < best_bpb_[i])) continue;
    best_bpb_[i] = b;
    k_.copy(best_[i].get(), paths_[i].params.get(), model_->layout().total * sizeof(float));
  }
}

void Trainer::restore_best() {
  for (size_t i = 0; i < best_.size(); ++i)
    if (std::isfinite(best_bpb_[i])) k_.copy(paths_[i].params.get(), best_[i].get(), model_->layout().total * sizeof(float));
}

Trainer::~Trainer() {
  if (path_comm_ != MPI_COMM_NULL) MPI_Comm_free(&path_comm_);
}

// Gradients (into grads_) and mean loss of local_batch_ sequences of the
// path's batch for this step, the first of them sequence `first`.
double Trainer::local_gradients(PathState& p, int first) {
  const int T = shape_.T;
  for (int b = 0; b < local_batch_; ++b)
    sample_window(p.train, T, deck_.run.seed, p.id, p.step, first + b, &tok_[size_t(b) * T], &tgt_[size_t(b) * T]);
  k_.to_device(tok_dev_.get(), tok_.data(), tok_.size() * sizeof(int32_t));
  k_.to_device(tgt_dev_.get(), tgt_.data(), tgt_.size() * sizeof(int32_t));
  k_.zero(grads_.get(), model_->layout().total * sizeof(float));
  const double loss = model_->forward(p.params.get(), tok_dev_.get(), tgt_dev_.get());
  model_->backward(p.params.get(), grads_.get(), tok_dev_.get(), tgt_dev_.get(), 1.0f / float(deck_.train.batch_size * T));
  return loss;
}

// train.micro_batch: the batch in fixed micro-batches, dealt to the path's
// ranks in turn; their gradients summed exactly, so that the sum does not
// depend on how many ranks share the path. Returns this rank's share of the loss.
double Trainer::micro_batch_gradients(PathState& p) {
  const auto& layout = model_->layout();
  const int rip = topo_.rank_in_path(rank_), rpp = topo_.ranks_per_path;
  const int G = deck_.train.batch_size / micro_;
  std::vector<const float*> terms;
  double loss = 0;
  for (int g = rip, t = 0; g < G; g += rpp, ++t) {
    loss += local_gradients(p, g * micro_) * rpp / G;
    if (micro_terms_.size() <= size_t(t)) micro_terms_.emplace_back();
    micro_terms_[t].resize(layout.total);
    k_.to_host(micro_terms_[t].data(), grads_.get(), layout.total * sizeof(float));
    terms.push_back(micro_terms_[t].data());
  }
  if (!terms.empty() && !p.check.verdict(loss, 0).empty()) micro_terms_[0][0] = NAN;  // every rank of the path sees it
  grad_host_.resize(layout.total);
  {
    CollectiveScope wait("the gradient all-reduce of a path");
    path_bytes_ += exact_.sum(terms, layout.total, G, path_comm_, grad_host_.data());
  }
  k_.to_device(grads_.get(), grad_host_.data(), layout.total * sizeof(float));
  return loss;
}

// A step of every path of this rank from `from` to `to` (a chunk).
void Trainer::inner_steps(long from, long to) {
  std::vector<std::vector<double>> losses(paths_.size());
  auto& seconds = pending_.chunk_seconds;
  seconds.resize(seconds.size() + topo_.paths, 0.0);
  for (size_t i = 0; i < paths_.size(); ++i) {
    const double t = MPI_Wtime();
    for (long s = from; s < to; ++s) {
      inner_step(paths_[i], losses[i]);
      outer_->progress();  // an overlapped round's ring moves on between inner steps
    }
    seconds[seconds.size() - topo_.paths + paths_[i].id] += MPI_Wtime() - t;
  }
  note_losses(from, to, losses);
}

void Trainer::inner_step(PathState& p, std::vector<double>& losses) {
  const bool paths = role_ == TrainerRole::paths;  // faults aimed at the paths spare the warm start
  fault_step_delay(deck_);
  fault_point(deck_, paths ? "inner" : "warm_start");
  const bool poisoned = paths && fault_diverges(deck_, p.id, p.step + 1);
  const double t0 = MPI_Wtime();
  double loss = micro_ > 0 ? micro_batch_gradients(p) : data_parallel_gradients(p, poisoned);
  if (poisoned) loss = NAN;
  finish_step(p, loss);
  losses.push_back(loss);
  if (paths) fault_slow_path(deck_, p.id, p.step - 1, topo_.paths, MPI_Wtime() - t0);
}

// This rank's share of the path's batch, its gradient summed over the path's
// ranks (data parallel; DiLoCo replicas keep their own). Returns its loss.
double Trainer::data_parallel_gradients(PathState& p, bool poisoned) {
  const auto& layout = model_->layout();
  double loss = local_gradients(p, topo_.rank_in_path(rank_) * local_batch_);
  if (poisoned) loss = NAN;
  // A loss only this rank sees diverging poisons its gradient: the summed norm then tells every rank of the path.
  if (topo_.ranks_per_path > 1 && !replicas_ && !p.check.verdict(loss, 0).empty()) {
    const float nan = NAN;
    k_.to_device(grads_.get(), &nan, sizeof nan);
  }
  if (device_sum_) {  // on the GPUs (set up only for a data-parallel path of several ranks)
    CollectiveScope wait("the gradient all-reduce of a path");
    device_sum_->sum(grads_.get(), layout.total);
  } else if (topo_.ranks_per_path > 1 && !replicas_) {
    float* g = grads_.get();
    if (k_.device_memory()) {  // stage through host memory
      grad_host_.resize(layout.total);
      k_.to_host(grad_host_.data(), g, layout.total * sizeof(float));
      g = grad_host_.data();
    }
    {
      CollectiveScope wait("the gradient all-reduce of a path");
      allreduce_pieces(g, layout.total, MPI_FLOAT, MPI_SUM, path_comm_);
    }
    if (g != grads_.get()) k_.to_device(grads_.get(), g, layout.total * sizeof(float));
  }
  if (topo_.ranks_per_path > 1 && !replicas_) path_bytes_ += 4.0 * layout.total;
  return loss;
}

// Clipping and the AdamW step on the path's summed gradient; a step that
// diverged is skipped (its batch with it: the data cursor moves on).
void Trainer::finish_step(PathState& p, double loss) {
  const auto& layout = model_->layout();
  const double norm = clip_gradients(k_, grads_.get(), layout.total, deck_.train.grad_clip);
  Schedule sched{deck_.train.lr, deck_.train.min_lr_ratio, deck_.train.warmup, deck_.train.steps};
  ++p.step;
  if (const std::string why = p.check.verdict(loss, norm); !why.empty()) return diverged(p, p.step, why);
  p.check.accept(loss);
  adamw_step(k_, layout, p.params.get(), grads_.get(), p.m.get(), p.v.get(), p.step, sched.at(p.step - 1), deck_.train);
}

// Path p went wrong at `step`: back to its anchors with fresh moments, said
// once by the path's first rank (each replica's own with DiLoCo replicas).
// Without anchors to go back to, the job ends.
void Trainer::diverged(PathState& p, long step, const std::string& why) {
  const bool warm = role_ == TrainerRole::warm_start;
  std::string who = warm ? "the warm start" : topo_.paths == 1 ? "training" : "path " + std::to_string(p.id);
  if (replicas_ && topo_.ranks_per_path > 1) who += " (replica " + std::to_string(topo_.rank_in_path(rank_)) + ")";
  const std::string what = who + " diverged at step " + std::to_string(step) + ": " + why;
  if (!outer_->reset_to_anchors(p)) {
    const long back = roll_back(p);
    if (back < 0)
      throw DivergedError(what + "; " + (warm ? "it has" : "its weights have") +
                          " no anchors and no good weights to go back to (no outer rounds, or private levels): the job "
                          "ends; lower train.lr (or raise train.diverge_factor) and run again: it resumes from the last "
                          "checkpoint, if any (checkpoints never hold weights that are not finite)");
    if (++diverged_count_[p.id] > deck_.train.diverge_limit)
      throw DivergedError(what + "; it diverged " + std::to_string(diverged_count_[p.id]) + " times (train.diverge_limit = " +
                          std::to_string(deck_.train.diverge_limit) + "): the job ends; lower train.lr and run again: it "
                          "resumes from the last checkpoint, if any (checkpoints never hold weights that are not finite)");
    ++rolled_back_;
    if (topo_.rank_in_path(rank_) == 0) {
      std::printf("%s; back to its last good weights (step %ld: a checkpoint or the start), the batches since skipped (%ld of "
                  "train.diverge_limit = %d)\n", what.c_str(), back, diverged_count_[p.id], deck_.train.diverge_limit);
      std::fflush(stdout);
    }
    return;
  }
  const size_t bytes = model_->layout().total * sizeof(float);
  k_.zero(p.m.get(), bytes), k_.zero(p.v.get(), bytes);
  ++p.diverged;
  if (replicas_ || topo_.rank_in_path(rank_) == 0) {
    std::printf("%s; back to its anchors, the batch skipped, left out of outer round %ld\n", what.c_str(),
                progress_.rounds);
    std::fflush(stdout);
  }
}

// Every path that diverged since the last round (or whose weights are no
// longer finite: a step's update can overflow), agreed by the world: the
// round leaves them out. Past train.diverge_limit events of one path, every rank ends the job.
void Trainer::agree_diverged(long step, long round) {
  std::vector<long> events(topo_.paths, 0);
  for (auto& p : paths_) {
    if (!std::isfinite(k_.sum_squares(p.params.get(), model_->layout().total))) diverged(p, step, "weights not finite");
    events[p.id] = std::max(events[p.id], p.diverged);
    p.diverged = 0;
  }
  {
    CollectiveScope wait("agreeing on the diverged paths");
    MPI_Allreduce(MPI_IN_PLACE, events.data(), topo_.paths, MPI_LONG, MPI_MAX, world_);
  }
  std::vector<int> left_out;
  for (int q = 0; q < topo_.paths; ++q) {
    if (events[q] == 0) continue;
    left_out.push_back(q);
    diverged_count_[q] += events[q];
    if (diverged_count_[q] > deck_.train.diverge_limit)
      throw DivergedError("path " + std::to_string(q) + " diverged " + std::to_string(diverged_count_[q]) +
                          " times by step " + std::to_string(step) + " (train.diverge_limit = " +
                          std::to_string(deck_.train.diverge_limit) + "): the job ends; lower train.lr and run again: "
                          "it resumes from the last checkpoint, if any (checkpoints never hold weights that are not finite)");
  }
  outer_->leave_out(round, std::move(left_out));
}

void Trainer::keep_rollback_point() {
  if (role_ != TrainerRole::warm_start && deck_.dipaco.inner_steps > 0) return;  // DiPaCo paths go back to their anchors
  const size_t n = model_->layout().total, bytes = n * sizeof(float);
  rollback_.resize(paths_.size());
  for (size_t i = 0; i < paths_.size(); ++i) {
    PathState& p = paths_[i];
    if (!std::isfinite(k_.sum_squares(p.params.get(), n))) continue;  // never a point to go back to
    RollbackPoint& r = rollback_[i];
    if (r.step < 0) r.params = DeviceBuffer<float>(k_, n), r.m = DeviceBuffer<float>(k_, n), r.v = DeviceBuffer<float>(k_, n);
    k_.copy(r.params.get(), p.params.get(), bytes), k_.copy(r.m.get(), p.m.get(), bytes), k_.copy(r.v.get(), p.v.get(), bytes);
    r.step = p.step;
  }
}

long Trainer::roll_back(PathState& p) {
  const size_t i = size_t(&p - paths_.data());
  if (i >= rollback_.size() || rollback_[i].step < 0) return -1;
  const RollbackPoint& r = rollback_[i];
  const size_t bytes = model_->layout().total * sizeof(float);
  k_.copy(p.params.get(), r.params.get(), bytes), k_.copy(p.m.get(), r.m.get(), bytes), k_.copy(p.v.get(), r.v.get(), bytes);
  return r.step;  // p.step stays: the data cursor moves on past the batches that led here
}

void Trainer::save_checkpoint() {
  if (!checkpointer_) return;
  const double t = MPI_Wtime();
  progress_.elapsed = t - t0_;
  const std::string path = checkpointer_->save(*this);  // its collectives are watched one by one
  keep_rollback_point();  // the weights just saved are finite (a checkpoint never holds others)
  checkpoint_seconds_ += MPI_Wtime() - t;
  ++checkpoints_;
  if (verbose_) say("checkpoint step %ld: %s (%.2f s)\n", progress_.step, path.c_str(), MPI_Wtime() - t);
}

void Trainer::outer_round(long step, TrainSummary& sum, bool overlap) {
  std::vector<PathState*> own;
  for (auto& p : paths_) own.push_back(&p);
  agree_diverged(step, progress_.rounds);
  if (overlap) {
    outer_->post(progress_.rounds, own, shard_bytes_);
  } else {
    note_round(outer_->round(progress_.rounds, own, shard_bytes_), progress_.rounds, step, sum);  // watched one by one
  }
  ++progress_.rounds;
}

void Trainer::complete_round(long step, TrainSummary& sum) {
  std::vector<PathState*> own;
  for (auto& p : paths_) own.push_back(&p);
  note_round(outer_->complete(own), progress_.rounds - 1, step, sum);
}

void Trainer::note_round(const RoundStats& rs, long round, long step, TrainSummary& sum) {
  sum.sync_seconds += rs.seconds;
  sum.sync_bytes += rs.bytes;
  sum.dropped += long(rs.dropped.size());
  sum.diverged += long(rs.diverged.size());
  for (int p : rs.dropped) say("outer round %ld: path %d's outer gradient dropped (fault.drop_outer_prob)\n", round, p);
  pending_.rounds.push_back({round, step, rs.seconds, rs.bytes, long(rs.dropped.size()), long(rs.diverged.size()),
                            rs.shared_scale, rs.module_scale});
}

// train.early_stop = path: every path back to its weights of the best
// validation bpb, evaluated again (the run's last evaluation).
EvalResult Trainer::back_to_best() {
  restore_best();
  const EvalResult e = evaluate();
  if (verbose_) say("early stop: every path back to its best validation weights: val bpb %.4f\n", e.bpb);
  return e;
}

void Trainer::say_stopped(long step, StopRequest stop) const {
  say("stopped at step %ld (%s); resubmit the same command to resume\n", step,
      stop.reason == StopReason::limit ? "run.max_hours or run.stop_after reached" : "signal received");
}

void Trainer::summarize(TrainSummary& sum, long step) {
  sum.wall_seconds = progress_.elapsed = MPI_Wtime() - t0_;
  sum.rolled_back = rolled_back_;
  sum.rounds = progress_.rounds;
  const double replicas = replicas_ ? topo_.ranks_per_path : 1;
  sum.tokens = long(double(topo_.paths) * deck_.train.batch_size * shape_.T * step * replicas);
  sum.path_bytes = path_bytes_;
  sum.checkpoint_seconds = checkpoint_seconds_;
  sum.checkpoints = checkpoints_;
  // What a fully synchronous data-parallel run of the same steps would all-reduce
  // per rank: every path's gradients, every step.
  sum.dp_bytes = 4.0 * model_->layout().total * step * double(topo_.paths_per_rank);
}

void Trainer::start_session() {
  t0_ = MPI_Wtime() - progress_.elapsed;
  open_metrics();
  pending_.from = progress_.step;
}

// The paper's loop: inner steps on every path, an outer round every H of
// them (RoundSchedule says which step does what). Between two round
// boundaries a rank talks only to the ranks of its own path: losses and
// evaluations wait for the next boundary (round_boundary.cpp), where they are
// reduced over the world and the ranks agree on stopping.
TrainSummary Trainer::run(long until) {
  TrainSummary sum;
  RoundSchedule plan(deck_, progress_.step, until);
  start_session();
  keep_rollback_point();
  if (plan.evaluates_first()) {  // the weights before training: with train.steps = 0, the run's result
    evaluate_between_rounds(0);
    round_boundary(0, {}, deck_.train.steps == 0 ? &sum.final_eval : nullptr);
  }
  long step = progress_.step;
  MPI_Pcontrol(kBetweenRounds);
  while (step < plan.end()) {
    const long next = plan.chunk_end(step);
    inner_steps(step, next);
    step = progress_.step = next;
    if (plan.logs(step)) print_progress(step);
    plan.stop_at(agreed_stop_step(plan, step));
    const StepPlan now = plan.at(step);
    if (now.boundary) MPI_Pcontrol(kAtRoundBoundary);
    if (now.complete_round) complete_round(step, sum);
    if (now.outer_round) outer_round(step, sum, now.post_round);
    if (now.evaluate) evaluate_between_rounds(step);
    if (!now.boundary) continue;
    const StopRequest agreed = round_boundary(step, stop_wanted(plan, step), now.final ? &sum.final_eval : nullptr);
    if (now.back_to_best) sum.final_eval = back_to_best();
    const BoundaryPlan then = plan.after_boundary(step, agreed);
    if (then.checkpoint) save_checkpoint();
    if (then.stop) {
      sum.stop = then.stop;
      say_stopped(step, then.stop);
      break;
    }
    MPI_Pcontrol(kBetweenRounds);
  }
  MPI_Pcontrol(kAtRoundBoundary);
  if (plan.trained_before()) sum.final_eval = evaluate();
  summarize(sum, step);
  return sum;
}

}  // namespace dipaco
