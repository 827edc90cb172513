// What the trainer does between outer rounds and at their boundaries.
// Between two boundaries a rank talks only to the ranks of its own path (the
// gradient all-reduce of replica_mode = data): losses and evaluations are kept
// and reduced over the world at the next boundary, where the ranks also agree
// on stopping. So a slow path delays the others only at the round boundary,
// where the outer round has to wait for it anyway. When boundaries fall:
// RoundSchedule (schedule.cpp).
#include <algorithm>
#include <cmath>
#include <cstdio>

#include "dipaco/data/padded_batches.hpp"
#include "dipaco/dist/fault.hpp"
#include "dipaco/dist/signals.hpp"
#include "dipaco/dist/watchdog.hpp"
#include "dipaco/io/log.hpp"
#include "dipaco/model/optimizer.hpp"
#include "dipaco/train/trainer.hpp"

namespace dipaco {

std::vector<double> Trainer::local_eval_sums() {
  const int T = shape_.T, P = topo_.paths, rip = topo_.rank_in_path(rank_);
  std::vector<double> sums(2 * P, 0.0);
  std::vector<float> fl(size_t(local_batch_) * T);
  for (auto& p : paths_) {
    // Windows of this path split over its ranks, local_batch_ at a time.
    std::vector<size_t> mine;
    for (size_t i = rip; i < p.val_starts.size(); i += topo_.ranks_per_path) mine.push_back(p.val_starts[i]);
    auto fill = [&](size_t b, size_t item) {
      const size_t s = mine[item];
      read_window(p.val, s, T, &tok_[b * T], &tgt_[b * T]);
    };
    padded_batches(mine.size(), local_batch_, fill, [&](size_t first, size_t used) {
      window_losses(p, tok_, tgt_, fl);
      for (size_t b = 0; b < used; ++b) {
        // A shard shorter than the context has one window, padded: only its own targets count.
        const size_t valid = std::min<size_t>(T, p.val.size() - 1 - mine[first + b]);
        for (size_t t = 0; t < valid; ++t) sums[p.id] += fl[b * T + t];
        sums[P + p.id] += target_bytes(&tgt_[b * T], valid, token_bytes_);
      }
    });
  }
  fault_point(deck_, "eval");
  return sums;
}

EvalResult Trainer::eval_result(const std::vector<double>& sums) const {
  const int P = topo_.paths;
  EvalResult r;
  double loss = 0, tokens = 0;
  for (int p = 0; p < P; ++p) {
    r.path_bpb.push_back(sums[P + p] > 0 ? sums[p] / sums[P + p] / std::log(2.0) : NAN);
    r.path_tokens.push_back(sums[P + p]);
    loss += sums[p];
    tokens += sums[P + p];
  }
  r.bpb = tokens > 0 ? loss / tokens / std::log(2.0) : NAN;
  return r;
}

// Collective over the world: for commands (export, evaluate) and the end of a run.
EvalResult Trainer::evaluate() {
  std::vector<double> sums = local_eval_sums();
  {
    CollectiveScope wait("the evaluation all-reduce");
    MPI_Allreduce(MPI_IN_PLACE, sums.data(), int(sums.size()), MPI_DOUBLE, MPI_SUM, world_);
  }
  return eval_result(sums);
}

// An evaluation of this rank's paths, reduced at the next boundary. With
// train.early_stop = path a path's ranks sum their windows at once (its own
// communicator), since each path keeps its best weights now.
void Trainer::evaluate_between_rounds(long step) {
  std::vector<double> sums = local_eval_sums();
  if (deck_.train.early_stop == EarlyStop::path) {
    if (topo_.ranks_per_path > 1) {
      CollectiveScope wait("the evaluation all-reduce of a path");
      MPI_Allreduce(MPI_IN_PLACE, sums.data(), int(sums.size()), MPI_DOUBLE, MPI_SUM, path_comm_);
    }
    keep_best(eval_result(sums));
    if (topo_.rank_in_path(rank_) != 0) std::fill(sums.begin(), sums.end(), 0.0);  // counted once in the world sum
  }
  pending_.evals.push_back({step, MPI_Wtime() - t0_, std::move(sums)});
}

void Trainer::note_losses(long from, long to, const std::vector<std::vector<double>>& losses) {
  const int P = topo_.paths;
  pending_.loss.resize(size_t(to - pending_.from) * P, 0.0);
  for (size_t i = 0; i < paths_.size(); ++i)
    for (long s = from; s < to; ++s)
      pending_.loss[size_t(s - pending_.from) * P + paths_[i].id] += losses[i][s - from] / topo_.ranks_per_path;
}

// Rank 0's progress line from the paths it trains; the others' losses are
// known as of the last boundary.
void Trainer::print_progress(long step) {
  if (!verbose_) return;
  const int P = topo_.paths;
  const size_t row = size_t(step - 1 - pending_.from) * P;
  double loss = 0;
  for (auto& p : paths_) loss += pending_.loss[row + p.id] * topo_.ranks_per_path / double(paths_.size());
  const double elapsed = MPI_Wtime() - t0_;
  const double tokens_per_step = double(P) * deck_.train.batch_size * shape_.T * (replicas_ ? topo_.ranks_per_path : 1);
  const double rate = tokens_per_step * step / std::max(elapsed, 1e-9);
  const double eta = (deck_.train.steps - step) * tokens_per_step / std::max(rate, 1e-9);
  // The last evaluation's value, with its step when it is older than this one.
  char val[48] = "-", which[96] = "";
  if (!progress_.eval_bpb.empty() && std::isfinite(progress_.eval_bpb.back())) {
    const long at = long(progress_.eval_step.back());
    if (at == step) std::snprintf(val, sizeof val, "%.4f", progress_.eval_bpb.back());
    else std::snprintf(val, sizeof val, "%.4f (step %ld)", progress_.eval_bpb.back(), at);
  }
  if (int(paths_.size()) < P)
    std::snprintf(which, sizeof which, " (%zu of %d paths; all as of step %ld)", paths_.size(), P, pending_.from);
  say("step %6ld/%ld | loss %.4f%s | val bpb %s | %.1fk tok/s | elapsed %s | ETA %s\n", step, long(deck_.train.steps), loss,
      which, val, rate / 1000, format_duration(elapsed).c_str(), format_duration(eta).c_str());
}

// This rank's stop request: a signal, a limit of the session, or the one the
// world agreed on since the last boundary (the largest wins).
StopRequest Trainer::stop_wanted(const RoundSchedule& plan, long step) const {
  return strongest(strongest(StopRequest::on_signal(stop_signal()), plan.limit(step, session_seconds())), stop_->agreed());
}

// A boundary completes every rank's posted requests; between boundaries
// this rank's is posted and the earlier ones tested, with no wait
// (stop_agreement.hpp), so that a stop costs about a chunk, not a round.
long Trainer::agreed_stop_step(const RoundSchedule& plan, long step) {
  return plan.boundary_due(step) ? stop_->drain(step) : stop_->poll(stop_wanted(plan, step), step);
}

// The boundary's world meeting: every pending loss, per-path time and
// evaluation in one all-reduce (losses summed in path order: the same at any
// rank count), their metrics records, and the stop agreement (each rank's
// request in its own slot of the same all-reduce: one latency, not two).
StopRequest Trainer::round_boundary(long step, StopRequest wanted, EvalResult* last_eval) {
  const int P = topo_.paths;
  const auto& evals = pending_.evals;
  const size_t n_loss = pending_.loss.size(), n_eval = evals.size(), n_chunk = pending_.chunk_seconds.size();
  const size_t chunk_at = n_loss + n_eval * 2 * P, stop_at = chunk_at + n_chunk;
  std::vector<double> all(stop_at + topo_.ranks, 0.0);
  std::copy(pending_.loss.begin(), pending_.loss.end(), all.begin());
  for (size_t e = 0; e < n_eval; ++e) std::copy(evals[e].sums.begin(), evals[e].sums.end(), all.begin() + n_loss + e * 2 * P);
  for (size_t i = 0; i < n_chunk; ++i) all[chunk_at + i] = pending_.chunk_seconds[i] / topo_.ranks_per_path;
  all[stop_at + rank_] = wanted.code();
  {
    CollectiveScope wait("the round-boundary all-reduce");
    MPI_Allreduce(MPI_IN_PLACE, all.data(), int(all.size()), MPI_DOUBLE, MPI_SUM, world_);
  }
  const StopRequest agreed = StopRequest::from_code(int(*std::max_element(all.begin() + stop_at, all.end())));
  const Schedule sched{deck_.train.lr, deck_.train.min_lr_ratio, deck_.train.warmup, deck_.train.steps};
  const double tokens_per_step = double(P) * deck_.train.batch_size * shape_.T * (replicas_ ? topo_.ranks_per_path : 1);
  for (size_t s = 0; s < n_loss / P; ++s) {
    double mean = 0;
    for (int p = 0; p < P; ++p) mean += all[s * P + p] / P;
    const long at = pending_.from + long(s) + 1;
    if (rank_ == 0 && metrics_)
      metrics_->write(JsonRecord().add("type", "train").add("step", at).add("loss", mean).add("lr", sched.at(at - 1))
                          .add("tokens", long(tokens_per_step * at)));
  }
  // Every boundary records each path's time since the last one (a round's record carries it): the
  // slowest path per stretch is what the run would take with every path on its own island.
  // With several chunks in the stretch, each chunk's times too: the slowest path per chunk is what
  // a world meeting every chunk (a log line's loss reduction) would have cost.
  const auto& rounds = pending_.rounds;
  if (rank_ == 0 && metrics_ && (!rounds.empty() || step > pending_.from)) {
    std::vector<double> seconds(P, 0.0);
    for (size_t i = 0; i < n_chunk; ++i) seconds[i % P] += all[chunk_at + i];
    auto round_record = [this](const PendingMetrics::Round& pr) {
      JsonRecord r = JsonRecord().add("type", "round").add("round", pr.round).add("step", pr.step)
          .add("sync_seconds", pr.seconds).add("bytes", pr.bytes).add("dropped", pr.dropped)
          .add("diverged", pr.diverged);
      // The factors dipaco.sharing_scale applied (rank 0's modules: a sample of them).
      if (deck_.dipaco.sharing_scale != SharingScale::none)
        r.add("shared_scale", pr.shared_scale).add("module_scale", pr.module_scale);
      return r;
    };
    // Rounds completed since the last boundary; the last record carries the paths' seconds.
    for (size_t k = 0; k + 1 < rounds.size(); ++k) metrics_->write(round_record(rounds[k]));
    JsonRecord r = rounds.empty() ? JsonRecord().add("type", "boundary").add("step", step) : round_record(rounds.back());
    r.add_raw("path_seconds", json_array(seconds));
    if (n_chunk > size_t(P)) {
      std::string chunks = "[";
      for (size_t c = 0; c < n_chunk / P; ++c)
        chunks += (c ? "," : "") + json_array(std::vector<double>(all.begin() + chunk_at + c * P, all.begin() + chunk_at + (c + 1) * P));
      r.add_raw("chunk_seconds", chunks + "]");
    }
    metrics_->write(r);
  }
  EvalResult last;
  for (size_t e = 0; e < n_eval; ++e) {
    const std::vector<double> sums(all.begin() + n_loss + e * 2 * P, all.begin() + n_loss + (e + 1) * 2 * P);
    last = eval_result(sums);
    progress_.eval_step.push_back(double(evals[e].step));
    progress_.eval_bpb.push_back(last.bpb);
    progress_.eval_path_bpb.insert(progress_.eval_path_bpb.end(), last.path_bpb.begin(), last.path_bpb.end());
    if (rank_ == 0 && metrics_)
      metrics_->write(JsonRecord().add("type", "eval").add("step", evals[e].step).add("val_bpb", last.bpb)
                          .add("elapsed", evals[e].elapsed).add_raw("path_val_bpb", json_array(last.path_bpb)));
    if (verbose_) say("eval  step %6ld | val bpb %.4f\n", evals[e].step, last.bpb);
  }
  pending_.clear(step);
  if (last_eval) *last_eval = last;
  return agreed;
}

}  // namespace dipaco
