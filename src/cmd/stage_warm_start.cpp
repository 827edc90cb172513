// Stage warm start: a dense model (one path) trained on all training
// documents; every path starts from it and its features route the documents.
// Output: warmstart.h5 (or route.warm_start), with the stage's stamp.
#include <hdf5.h>
#include <mpi.h>

#include <cstdio>
#include <filesystem>

#include "dipaco/dist/pieces.hpp"
#include "dipaco/cmd/app.hpp"
#include "dipaco/cmd/run_context.hpp"
#include "dipaco/dist/first_error.hpp"
#include "dipaco/dist/watchdog.hpp"
#include "dipaco/io/files.hpp"
#include "dipaco/io/h5io.hpp"
#include "dipaco/io/stamp.hpp"
#include "dipaco/train/metrics.hpp"

namespace fs = std::filesystem;

namespace dipaco {

namespace {

bool read_warm_start(const std::string& file, std::vector<float>& params) {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  H5Id f(H5Fopen(file.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  if (!f.ok()) return false;
  try {
    read_floats(f, "params", params.size(), params.data(), file);
    return true;
  } catch (const CheckpointError&) {
    return false;
  }
}

void write_warm_start(const std::string& file, const std::string& stamp, const std::vector<float>& params) {
  // A shared warm start (route.warm_start) may name a folder no run has made yet.
  if (const fs::path dir = fs::path(file).parent_path(); !dir.empty()) fs::create_directories(dir);
  write_h5_atomic(file, [&](hid_t f) {
    write_attr_string(f, "stamp", stamp);
    write_floats(f, "params", params.data(), params.size());
  });
}

// One path, no outer rounds, no early stop; checkpointed like training.
Deck warm_start_deck(const Deck& deck) {
  std::string ones;
  for (size_t l = 0; l < deck.dipaco.modules_per_level.size(); ++l) ones += l ? ",1" : "1";
  return with_overrides(deck, {"dipaco.modules_per_level=" + ones, "dipaco.inner_steps=0", "dipaco.overlap_steps=0",
                               "dipaco.replica_mode=data", "train.steps=" + std::to_string(deck.route.warm_steps),
                               "train.early_stop=none", "run.stop_after=0"});
}

}  // namespace

bool up_to_date_warm_start(const RunContext& c, const std::string& stamp) {
  // Without warm-start steps there is nothing to read: make_warm_start says "none".
  return c.deck.route.warm_steps > 0 && same_stamp(read_stamp_everywhere(c.warm_file), stamp);
}

bool load_warm_start(RunContext& c, const std::string&, std::string&) {
  c.warm.resize(make_layout(model_shape(c.deck)).total);
  int have = c.rank == 0 && read_warm_start(c.warm_file, c.warm);
  watched("the warm-start broadcast", [&] { MPI_Bcast(&have, 1, MPI_INT, 0, MPI_COMM_WORLD); });
  if (have)
    watched("the warm-start broadcast", [&] { bcast_pieces(c.warm.data(), c.warm.size(), MPI_FLOAT, 0, MPI_COMM_WORLD); });
  return have;
}

int make_warm_start(RunContext& c, const std::string& stamp) {
  const Deck& deck = c.deck;
  if (deck.route.warm_steps == 0) {
    c.warm = init_params(model_shape(deck), make_layout(model_shape(deck)), deck.run.seed);
    say("stage warm start: none (route.warm_steps = 0); paths start from the seed's initialisation");
    return kExitOk;
  }
  const Deck warm_deck = warm_start_deck(deck);
  const std::vector<Shard> train{c.split.train}, val{c.split.val};
  Trainer t(warm_deck, MPI_COMM_WORLD, *c.kernels, train, val, "", c.rank == 0, TrainerRole::warm_start);
  t.set_token_bytes(c.token_bytes);
  c.warm.resize(t.layout().total);
  // Its checkpoints live in <run dir>/warmstart/checkpoints, under the warm start's stamp.
  const std::string ckpt_dir = c.run_dir + "/warmstart", stamp_file = ckpt_dir + "/stamp";
  if (!same_stamp(read_text_everywhere(stamp_file), stamp) && c.rank == 0) {
    fs::remove_all(ckpt_dir);
    fs::create_directories(ckpt_dir);
    write_file_atomic(stamp_file, stamp);
  }
  Checkpointer ckpt(warm_deck, ckpt_dir, MPI_COMM_WORLD);
  const std::string resumed = ckpt.load(t, "auto", false);
  t.set_checkpointer(&ckpt);
  say("stage warm start: a dense model on all training documents for " + std::to_string(deck.route.warm_steps) + " steps" +
      (resumed.empty() ? "" : ", resumed from " + resumed + " at step " + std::to_string(t.progress().step)));
  const TrainSummary s = t.run();
  if (s.stop) {
    say("exit " + std::to_string(int(kExitRequeue)) +
        ": stopped during the warm start with a checkpoint; run the same command again to resume");
    return kExitRequeue;
  }
  c.kernels->to_host(c.warm.data(), t.paths()[0].params.get(), c.warm.size() * sizeof(float));
  std::string error;
  if (c.rank == 0) try {
      write_warm_start(c.warm_file, stamp, c.warm);
    } catch (const std::exception& e) {
      error = e.what();
    }
  if (auto e = first_error(error, MPI_COMM_WORLD); !e.empty())
    throw WriteError("writing the warm start " + c.warm_file + " failed: " + e + " (disk full or a file-size limit?); " +
                     "its checkpoints in " + ckpt_dir + " are kept: run the same command again to write it");
  if (c.rank == 0) {
    fs::remove_all(ckpt_dir);  // warmstart.h5 replaces its checkpoints
    say("stage warm start: done in %s, validation bpb %.4f -> %s\n", format_duration(s.wall_seconds).c_str(), s.final_eval.bpb,
        c.warm_file.c_str());
  }
  return kExitOk;
}

}  // namespace dipaco
