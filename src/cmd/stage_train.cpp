// Stage train: every path's inner steps and the outer rounds, from the warm
// start, resumed from the newest checkpoint; with route.em_rounds the shards
// are re-made by loss at evenly spaced steps inside the stage. Output: the
// checkpoints (and train.stamp, the deck values they were trained with).
#include <mpi.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "dipaco/cmd/app.hpp"
#include "dipaco/cmd/pipeline.hpp"
#include "dipaco/cmd/run_context.hpp"
#include "dipaco/data/segment_shards.hpp"
#include "dipaco/data/window_router.hpp"
#include "dipaco/dist/watchdog.hpp"
#include "dipaco/io/files.hpp"
#include "dipaco/io/stamp.hpp"
#include "dipaco/train/metrics.hpp"

namespace fs = std::filesystem;

namespace dipaco {

namespace {

// Steps at which re-sharding round e (1-based) happens (multiples of H when H > 0).
std::vector<long> resharding_steps(const Deck& deck) {
  const long steps = deck.train.steps, H = deck.dipaco.inner_steps;
  std::vector<long> boundary;
  for (int e = 1; e <= deck.route.em_rounds; ++e) {
    long b = steps * e / (deck.route.em_rounds + 1);
    if (H > 0) b = std::max(H, b / H * H);
    if (b > 0 && b < steps && (boundary.empty() || b > boundary.back())) boundary.push_back(b);
  }
  return boundary;
}

// Re-sharding round e at step `at`: the file of this round, or made from the current weights.
void reshard(RunContext& c, size_t e, long at, const std::string& train_stamp) {
  const std::string file = shard_file_name(c.run_dir, int(e)), stamp = train_stamp + "em_round = " + std::to_string(e) + "\n";
  const std::vector<int> held = c.topo.paths_of_rank(c.rank);
  if (!load_shards(file, stamp, c.split, held, c.shards)) {
    const double t0 = MPI_Wtime();
    ShardFile next = reroute_by_loss(c.deck, c.split, *c.trainer, c.features(), c.shards.router, int(e));
    // The placements that moved, each path counted by the first rank that holds it.
    long moved = 0;
    for (int p : held) {
      if (c.topo.ranks_of_path(p)[0] != c.rank) continue;
      std::vector<int> before = c.shards.train[size_t(p)];
      std::sort(before.begin(), before.end());
      for (int i : next.train[size_t(p)]) moved += !std::binary_search(before.begin(), before.end(), i);
    }
    watched("counting the moved placements", [&] { MPI_Allreduce(MPI_IN_PLACE, &moved, 1, MPI_LONG, MPI_SUM, MPI_COMM_WORLD); });
    c.shards = std::move(next);
    save_shards(file, c.shards, stamp, c.split, c.rank);
    keep_held(c.shards, c.split.train, held);
    say("re-routing round %zu at step %ld: %ld document placements changed by loss in %s; per path: %s -> %s\n", e, at, moved,
        format_duration(MPI_Wtime() - t0).c_str(), shard_sizes(c.shards.train_docs).c_str(), file.c_str());
  }
  c.trainer->set_shards(shards_of(c.split.train, c.shards.train), shards_of(c.split.val, c.shards.val), c.shards.train_bytes);
}

// Trains to train.steps, re-sharding at each boundary passed; a finished run
// only reads its last shards back. Returns kExitRequeue when a stop request ended it.
int train_rounds(RunContext& c, const std::string& train_stamp) {
  const long steps = c.deck.train.steps;
  const std::vector<long> boundary = resharding_steps(c.deck);
  long step = c.trainer->progress().step;
  double sync_seconds = 0, sync_bytes = 0;
  long dropped = 0, diverged = 0;
  for (size_t e = 0; e <= boundary.size(); ++e) {
    const long until = e < boundary.size() ? boundary[e] : steps;
    if (e > 0 && step >= boundary[e - 1]) reshard(c, e, boundary[e - 1], train_stamp);
    if (step >= until && until < steps) continue;
    c.summary = c.trainer->run(until);
    sync_seconds += c.summary.sync_seconds;
    sync_bytes += c.summary.sync_bytes;
    dropped += c.summary.dropped;
    diverged += c.summary.diverged;
    step = c.trainer->progress().step;
    if (c.summary.stop) {
      say("exit " + std::to_string(int(kExitRequeue)) + ": checkpoint written; run the same command again to resume");
      return kExitRequeue;
    }
  }
  c.summary.sync_seconds = sync_seconds;
  c.summary.sync_bytes = sync_bytes;
  c.summary.dropped = dropped;
  c.summary.diverged = diverged;
  return kExitOk;
}

// The deck the trainer runs: the run's, or, when the deck changed under
// existing checkpoints, the run's starting over (those moved aside). Then
// train.stamp names it.
void set_train_deck(RunContext& c, const std::string& stamp) {
  const std::string stamp_file = c.run_dir + "/train.stamp";
  const std::string before = read_text_everywhere(stamp_file);
  c.train_deck = c.deck;
  if (!before.empty() && !same_stamp(before, stamp) && c.deck.run.restart == "auto") {
    if (c.rank == 0) {
      const std::string aside = c.run_dir + "/checkpoints.stale";
      move_checkpoints_aside(c.run_dir + "/checkpoints");
      const std::string changes = stamp_changes(before, stamp);
      // The corpus's content is in the stamp too: say which of the two changed.
      const bool corpus = changes.find("corpus.content_hash") != std::string::npos;
      const bool keys = changes.find(',') != std::string::npos || !corpus;
      const char* what = corpus && keys ? "the deck and the corpus changed" : corpus ? "the corpus changed" : "the deck changed";
      say("stage train: %s (%s); earlier checkpoints moved to %s, training starts over\n", what, changes.c_str(), aside.c_str());
    }
    c.train_deck = with_overrides(c.deck, {"run.restart=never"});
  }
  if (c.rank == 0) write_file_atomic(stamp_file, stamp);
  watched("a barrier after rank 0 wrote a file", [] { MPI_Barrier(MPI_COMM_WORLD); });
}

// The stamp segments.h5 is kept under: the train stamp's and the shards' round.
std::string segment_stamp(const RunContext& c, const std::string& train_stamp) {
  return train_stamp + "shard_round = " + std::to_string(c.shards.round) + "\n";
}

// route.segment_tokens: every held path's windows, cut from the training
// documents and routed by the windows router of the segments' windows, or read
// back from the run's segments.h5 when it was cut for this stamp.
SegmentShards make_segment_shards(RunContext& c, const std::string& train_stamp) {
  const Deck& d = c.train_deck;
  const double t0 = MPI_Wtime();
  const std::string file = c.run_dir + "/segments.h5";
  const std::string stamp = segment_stamp(c, train_stamp);
  SegmentShards seg;
  const size_t window = segment_window(d);
  const bool read = load_segment_shards(file, stamp, c.split.train.size(), c.topo, c.rank, MPI_COMM_WORLD, seg);
  if (!read) {
    FeatureModel& features = c.features(int(window));
    const Router router = window_router(c.shards.train, c.split.train, c.topo, c.rank, features, d,
                                        size_t(d.route.segment_tokens), window, d.route.segment_margin, true,
                                        MPI_COMM_WORLD);
    seg = segment_shards(c.shards.train, c.split.train, router, c.topo, c.rank, features, d, MPI_COMM_WORLD);
    seg.router = router;
    if (const std::string why = save_segment_shards(file, stamp, seg, c.topo, c.rank, MPI_COMM_WORLD); !why.empty())
      say("note: %s not written (%s); the next start cuts the segments again\n", file.c_str(), why.c_str());
  }
  c.seconds.emplace_back("segment_shards", MPI_Wtime() - t0);
  const auto [lo, hi] = std::minmax_element(seg.bytes.begin(), seg.bytes.end());
  say("segment shards: %ld segments of %d tokens, %ld placed by the %zu tokens before them, %s in %s; tokens per path %.0f to %.0f\n",
      seg.segments, d.route.segment_tokens, seg.rerouted, window, read ? "read back" : "cut",
      format_duration(MPI_Wtime() - t0).c_str(), *lo, *hi);
  return seg;
}

// The trainer of c.train_deck, from the warm start, resumed from the newest
// usable checkpoint (or none: fresh). `to_train`: segment shards are made (a
// finished run's trainer only evaluates); train_stamp names them.
void open_trainer(RunContext& c, const std::string& train_stamp, bool to_train) {
  const Deck& d = c.train_deck;
  std::erase_if(c.seconds, [](const auto& s) { return s.first == "segment_shards"; });
  const bool segments = to_train && d.route.segment_tokens > 0;
  SegmentShards seg;
  c.segment_router.reset();
  if (segments) {
    seg = make_segment_shards(c, train_stamp);
    c.segment_router = seg.router;
  } else if (Router r; d.route.segment_tokens > 0 &&  // a finished run: the router kept with its segments, if any
                       read_segment_router(c.run_dir + "/segments.h5", segment_stamp(c, train_stamp), c.topo.paths,
                                           MPI_COMM_WORLD, r)) {
    c.segment_router = std::move(r);
  }
  const double t0 = MPI_Wtime();
  c.trainer = std::make_unique<Trainer>(d, MPI_COMM_WORLD, *c.kernels, shards_of(c.split.train, c.shards.train),
                                        shards_of(c.split.val, c.shards.val), c.run_dir, true, TrainerRole::paths,
                                        segments ? seg.bytes : c.shards.train_bytes);
  if (segments) {
    const std::vector<int> held = c.topo.paths_of_rank(c.rank);
    for (PathState& p : c.trainer->paths())
      p.train = segment_stream(seg.held[size_t(std::find(held.begin(), held.end(), p.id) - held.begin())], c.split.train);
  }
  c.trainer->set_initial_params(c.warm);
  c.trainer->set_token_bytes(c.token_bytes);
  c.checkpointer = std::make_unique<Checkpointer>(d, c.run_dir, MPI_COMM_WORLD);
  const double t1 = MPI_Wtime();  // communicators, buffers and the paths' weights made
  c.resumed = c.checkpointer->load(*c.trainer, d.run.restart, d.run.restart_force);  // its collectives are watched one by one
  c.trainer->set_checkpointer(c.checkpointer.get());
  // Once each in summary.json, also when a load that proved unusable opened a trainer before.
  std::erase_if(c.seconds, [](const auto& s) { return s.first == "train_setup" || s.first == "checkpoint_read"; });
  c.seconds.emplace_back("train_setup", t1 - t0);
  if (!c.resumed.empty()) c.seconds.emplace_back("checkpoint_read", MPI_Wtime() - t1);
}

}  // namespace

// 2: the windows router balanced on windows from whole documents (1: from the first eval.doc_bytes).
std::string train_stamp_lines(const RunContext& c) {
  return c.deck.route.segment_tokens > 0 ? "segment_cut = 2\n" : "";
}

// Trained with this stamp to train.steps: the checkpoint a resume takes first
// (ckpt-<step>.h5) is at train.steps. run.restart = never or a checkpoint's
// path goes through make_train, which says what it resumed.
bool up_to_date_train(const RunContext& c, const std::string& stamp) {
  if (c.deck.run.restart != "auto" || !same_stamp(read_text_everywhere(c.run_dir + "/train.stamp"), stamp)) return false;
  long step = -1;
  if (c.rank == 0)
    if (const auto order = resume_order(c.run_dir + "/checkpoints"); !order.empty())
      step = std::atol(fs::path(order[0]).filename().string().c_str() + 5);
  watched("a broadcast of the newest checkpoint's step", [&] { MPI_Bcast(&step, 1, MPI_LONG, 0, MPI_COMM_WORLD); });
  return step >= c.deck.train.steps;
}

// The finished run: its last checkpoint, its last shards and its final evaluation.
bool load_train(RunContext& c, const std::string& stamp, std::string&) {
  c.train_deck = c.deck;
  open_trainer(c, stamp, false);
  if (c.trainer->progress().step < c.deck.train.steps) return false;  // that checkpoint was unusable: train on
  return train_rounds(c, stamp) == kExitOk;
}

int make_train(RunContext& c, const std::string& stamp) {
  c.checkpointer.reset(), c.trainer.reset();  // load_train's, if it proved unusable: it refers to c.train_deck
  set_train_deck(c, stamp);
  open_trainer(c, stamp, true);
  const long step = c.trainer->progress().step, steps = c.deck.train.steps;
  if (!c.resumed.empty())
    say("stage train: resumed from %s at step %ld of %ld (outer round %ld)\n", c.resumed.c_str(), step, steps,
        c.trainer->progress().rounds);
  else say("stage train: %ld steps per path on %d path(s)\n", steps, c.topo.paths);
  return train_rounds(c, stamp);
}

}  // namespace dipaco
