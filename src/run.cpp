// `dipaco run`: the training job under mpirun.
#include <mpi.h>
#include <omp.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "dipaco/app.hpp"
#include "dipaco/checkpoint.hpp"
#include "dipaco/signals.hpp"
#include "dipaco/corpus.hpp"
#include "dipaco/deck.hpp"
#include "dipaco/kernels.hpp"
#include "dipaco/shards.hpp"
#include "dipaco/trainer.hpp"
#include "dipaco/watchdog.hpp"

namespace fs = std::filesystem;

namespace dipaco {
namespace {

int local_rank() {
  const char* v = std::getenv("OMPI_COMM_WORLD_LOCAL_RANK");
  return v ? std::atoi(v) : 0;
}

void write_summary(const std::string& path, const Deck& deck, const Topology& topo, const TrainSummary& s) {
  JsonRecord r;
  r.add("name", deck.run.name)
      .add("ranks", topo.ranks)
      .add("paths", topo.paths)
      .add("steps", long(deck.train.steps))
      .add("tokens", s.tokens)
      .add("val_bpb", s.final_eval.bpb)
      .add_raw("path_val_bpb", json_array(s.final_eval.path_bpb))
      .add("wall_seconds", s.wall_seconds)
      .add("tokens_per_second", s.tokens / std::max(s.wall_seconds, 1e-9))
      .add("outer_rounds", s.rounds)
      .add("dropped_contributions", s.dropped)
      .add("sync_seconds", s.sync_seconds)
      .add("sync_share", s.sync_seconds / std::max(s.wall_seconds, 1e-9))
      .add("sync_bytes_per_rank", s.sync_bytes)
      .add("path_allreduce_bytes_per_rank", s.path_bytes)
      .add("data_parallel_bytes_per_rank", s.dp_bytes)
      .add("communication_saving", s.sync_bytes + s.path_bytes > 0 ? s.dp_bytes / (s.sync_bytes + s.path_bytes) : 0.0);
  std::ofstream(path) << r.str() << "\n";
}

int train(const Deck& deck, int rank, int size) {
  if (deck.run.threads > 0) omp_set_num_threads(deck.run.threads);
  const std::string run_dir = (fs::path(deck.run.out_dir) / deck.run.name).string();
  if (rank == 0) {
    fs::create_directories(run_dir);
    std::ofstream(run_dir + "/deck.ini") << "# resolved deck" << (deck.source.empty() ? "" : " from " + deck.source)
                                         << "\n" << deck.text();
  }
  MPI_Barrier(MPI_COMM_WORLD);

  Split split = split_corpus(read_corpus(deck.data.corpus), deck.data.val_fraction, deck.data.min_val_docs);
  Topology topo = make_topology(deck.dipaco.modules_per_level, size);
  auto train_shards = shard_by_rule(split.train, topo.paths, deck.data.shard_rule);
  auto val_shards = shard_by_rule(split.val, topo.paths, deck.data.shard_rule);
  auto kernels = make_kernels(deck.run.device, local_rank());
  if (rank == 0) {
    std::printf("dipaco %s: %d rank(s), %d path(s), %d thread(s) per rank, device %s, precision %s\n", DIPACO_VERSION,
                size, topo.paths, omp_get_max_threads(), kernels->name().c_str(), deck.train.precision.c_str());
    std::printf("corpus %s: %zu training and %zu validation documents\n", deck.data.corpus.c_str(), split.train.size(),
                split.val.size());
    std::fflush(stdout);
  }
  start_watchdog(deck.run.collective_timeout, rank);
  Trainer trainer(deck, MPI_COMM_WORLD, *kernels, train_shards, val_shards, run_dir);
  Checkpointer ckpt(deck, run_dir, MPI_COMM_WORLD);
  std::string resumed;
  {
    CollectiveScope wait("loading a checkpoint");
    resumed = ckpt.load(trainer, deck.run.restart, deck.run.restart_force);
  }
  if (rank == 0 && !resumed.empty())
    std::printf("resumed from %s at step %ld (outer round %ld)\n", resumed.c_str(), trainer.progress().step,
                trainer.progress().rounds);
  trainer.set_checkpointer(&ckpt);
  TrainSummary s = trainer.run();
  if (s.stopped) {
    if (rank == 0) std::printf("exit %d: checkpoint written; run the same command again to resume\n", int(kExitRequeue));
    return kExitRequeue;
  }
  if (rank == 0) {
    write_summary(run_dir + "/summary.json", deck, topo, s);
    std::printf("\ndone: %ld steps, %.0f tokens in %s (%.1fk tok/s)\n", long(deck.train.steps), double(s.tokens),
                format_duration(s.wall_seconds).c_str(), s.tokens / std::max(s.wall_seconds, 1e-9) / 1000);
    std::printf("validation bits per byte: %.4f\n", s.final_eval.bpb);
    if (s.rounds > 0)
      std::printf("outer rounds: %ld; sync %.3f s = %.2f%% of wall time; %.2f MB all-reduced per rank "
                  "(data-parallel would be %.1f MB: %.0fx less)\n",
                  s.rounds, s.sync_seconds, 100 * s.sync_seconds / std::max(s.wall_seconds, 1e-9),
                  (s.sync_bytes + s.path_bytes) / 1e6, s.dp_bytes / 1e6,
                  s.dp_bytes / std::max(s.sync_bytes + s.path_bytes, 1.0));
    std::printf("results: %s/{metrics.jsonl,summary.json,deck.ini}\n", run_dir.c_str());
  }
  return kExitOk;
}

}  // namespace

int cmd_run(const Args& args) {
  install_stop_handlers();  // before anything slow: an early preemption signal must not kill a rank
  int provided;
  MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
  int rank, size;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  int code = kExitOk;
  try {
    std::string file;
    Args ov;
    split_deck_args(args, file, ov);
    if (file.empty()) throw DeckError("run needs a deck file: dipaco run DECK.ini [--section.key=value ...]");
    Deck deck = load_deck(file, ov);
    code = train(deck, rank, size);
  } catch (const DeckError& e) {  // the same on every rank: report once, exit together
    if (rank == 0) std::fprintf(stderr, "dipaco: error: %s\n", e.what());
    code = kExitBadInput;
  } catch (const CorpusError& e) {
    if (rank == 0) std::fprintf(stderr, "dipaco: error: %s\n", e.what());
    code = kExitBadInput;
  } catch (const CheckpointError& e) {  // agreed on by every rank before it is thrown
    if (rank == 0) std::fprintf(stderr, "dipaco: error: %s\n", e.what());
    code = kExitFailure;
  } catch (const std::exception& e) {  // may be on one rank only: do not let the others hang
    std::fprintf(stderr, "dipaco: error on rank %d: %s\n", rank, e.what());
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, kExitFailure);
  }
  stop_watchdog();
  MPI_Finalize();
  return code;
}

}  // namespace dipaco
