#include "dipaco/io/checkpoint.hpp"

#include <hdf5.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>

#include "dipaco/dist/first_error.hpp"
#include "dipaco/dist/watchdog.hpp"
#include "dipaco/io/h5io.hpp"
#include "dipaco/io/key_lines.hpp"
#include "dipaco/io/path_arrays.hpp"
#include "dipaco/train/trainer.hpp"

namespace fs = std::filesystem;

namespace dipaco {

uint64_t checksum(const void* data, size_t bytes) {
  const unsigned char* p = static_cast<const unsigned char*>(data);
  uint64_t h = 1469598103934665603ULL;
  for (size_t i = 0; i < bytes; ++i) h = (h ^ p[i]) * 1099511628211ULL;
  return h;
}

namespace {

// A path's private group averaged among its DiLoCo replicas is a unit of path
// p: /modules/path_embeddings/P<p> (embeddings) or /modules/L<l>/P<p> (a private level).
std::string unit_path(const SyncUnit& u) {
  if (u.level < 0) return u.path < 0 ? "/modules/embeddings" : "/modules/path_embeddings/P" + std::to_string(u.path);
  return "/modules/L" + std::to_string(u.level) + (u.path < 0 ? "/M" + std::to_string(u.module) : "/P" + std::to_string(u.path));
}

// Replicas per path stored in a checkpoint (attribute /paths replicas; 1 when absent
// or unreadable: verification reports a broken file). Read by rank 0, broadcast.
long stored_replicas(const std::string& file, MPI_Comm comm) {
  int rank;
  MPI_Comm_rank(comm, &rank);
  long n = 1;
  if (rank == 0) {
    H5Id f(H5Fopen(file.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
    if (f.ok() && H5Lexists(f, "paths", H5P_DEFAULT) > 0) {
      H5Id g(H5Gopen2(f, "paths", H5P_DEFAULT), H5Gclose);
      if (g.ok() && H5Aexists(g, "replicas") > 0) {
        try {
          n = read_attr_long(g, "replicas", 1, 1L << 20);
        } catch (const CheckpointError&) {
          n = 1;
        }
      }
    }
  }
  watched("agreeing on a checkpoint's replicas", [&] { MPI_Bcast(&n, 1, MPI_LONG, 0, comm); });
  return n;
}

}  // namespace

std::vector<std::string> incompatible_keys(const std::string& saved, const Deck& now) {
  auto old = parse_key_lines(saved);
  std::vector<std::string> diff;
  for (const DeckKey& key : deck_keys()) {
    if (!key.shape) continue;
    const std::string& k = key.name;
    auto it = old.find(k);
    // A key newer than the checkpoint's deck held its default there.
    std::string saved = it != old.end() ? it->second : "?";
    if (it == old.end() && k == "dipaco.private_levels") saved = "none";
    if (saved != now.values.at(k))
      diff.push_back(k + " (checkpoint: " + saved.substr(0, 80) + ", deck: " + now.values.at(k) + ")");
  }
  return diff;
}

std::vector<std::string> list_checkpoints(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (auto& e : fs::directory_iterator(dir, ec)) {
    std::string n = e.path().filename().string();
    if (n.rfind("ckpt-", 0) == 0 && n.size() > 8 && n.substr(n.size() - 3) == ".h5") out.push_back(e.path().string());
  }
  std::sort(out.rbegin(), out.rend());  // zero-padded step numbers: newest first
  return out;
}

Checkpointer::Checkpointer(const Deck& deck, const std::string& run_dir, MPI_Comm world)
    : deck_(deck), dir_(run_dir + "/checkpoints"), world_(world) {
  MPI_Comm_rank(world, &rank_);
  if (rank_ == 0) fs::create_directories(dir_);
  MPI_Barrier(world);
}

Progress read_checkpoint(const std::string& file, MPI_Comm comm, const Deck& deck, int paths,
                         const std::vector<CheckpointGroup>& groups, Kernels* kernels, bool force) {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  H5Id fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
  H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL);
  H5Id f;
  watched("opening a checkpoint", [&] { f = H5Id(H5Fopen(file.c_str(), H5F_ACC_RDONLY, fapl), H5Fclose); });
  if (!f.ok()) throw CheckpointError(file + ": not a readable HDF5 file (truncated or corrupt)");
  check_checkpoint_format(f, file);
  auto diff = incompatible_keys(read_attr_string(f, "deck"), deck);
  if (!diff.empty() && !force) {
    std::string msg = "checkpoint " + file + " does not fit this deck; differing keys:";
    for (auto& d : diff) msg += "\n  " + d;
    throw DeckError(msg + "\n(use --run.restart=never to start fresh, or --run.restart_force=1)");
  }
  constexpr long kMaxStep = 1L << 40;  // the deck's limit on train.steps
  Progress pr;
  pr.step = read_attr_long(f, "inner_step", 0, kMaxStep);
  pr.rounds = read_attr_long(f, "outer_round", 0, kMaxStep);
  pr.elapsed = read_attr_scalar<double>(f, "wall_time", H5T_NATIVE_DOUBLE);
  if (!(pr.elapsed >= 0 && pr.elapsed < 1e12)) throw CheckpointError(file + ": attribute wall_time is not a duration");

  size_t largest = 0, arena = 0;
  for (const auto& g : groups) largest = std::max(largest, g.size), arena = g.path_id >= 0 ? g.size : arena;
  std::vector<float> host(largest);
  std::unique_ptr<PathArrays> rows;
  if (arena) rows = std::make_unique<PathArrays>(f, file, paths, arena);
  for (const auto& g : groups) {
    for (const auto& [name, dst] : g.datasets) {
      if (g.path_id >= 0) rows->read(name, g.path_id, g.replica, host.data());
      else read_floats(open_group(f, g.path), name, g.size, host.data(), file);
      // Written only finite (checkpoint_save.cpp): a NaN here was put there since, and is never resumed from.
      if (!std::all_of(host.begin(), host.begin() + g.size, [](float x) { return std::isfinite(x); }))
        throw CheckpointError(file + ": " + (g.path_id >= 0 ? "path " + std::to_string(g.path_id) + "'s " : g.path + "/") +
                              name + " holds values that are not finite");
      if (kernels) kernels->to_device(dst, host.data(), g.size * sizeof(float));
    }
    if (g.path_id >= 0 && rows->step(g.path_id) != pr.step)
      throw CheckpointError(file + ": path " + std::to_string(g.path_id) + " (attribute steps of /paths) is at step " +
                            std::to_string(rows->step(g.path_id)) + ", the checkpoint at " + std::to_string(pr.step));
  }
  // One evaluation per row: its step, its bits per byte, and one value per path.
  H5Id metrics = open_group(f, "/metrics");
  constexpr hsize_t kMaxEvals = 1 << 24;
  pr.eval_step = read_doubles(metrics, "eval_step", kMaxEvals);
  pr.eval_bpb = read_doubles(metrics, "eval_bpb", kMaxEvals);
  pr.eval_path_bpb = read_doubles(metrics, "eval_path_bpb", kMaxEvals, hsize_t(paths));
  if (pr.eval_bpb.size() != pr.eval_step.size() || pr.eval_path_bpb.size() != pr.eval_step.size() * size_t(paths))
    throw CheckpointError(file + ": datasets /metrics/eval_step, eval_bpb and eval_path_bpb disagree on the number of evaluations");
  return pr;
}

std::string Checkpointer::start_fresh(const std::string& why) {
  // Earlier checkpoints would outlive this run's own (higher step numbers,
  // `latest`, fallback order): keep them aside, as a changed deck does.
  if (rank_ == 0) {
    std::string aside = move_checkpoints_aside(dir_);
    if (!aside.empty()) std::printf("%s: earlier checkpoints moved to %s, training starts over\n", why.c_str(), aside.c_str());
    std::fflush(stdout);
  }
  MPI_Barrier(world_);
  return "";
}

std::string Checkpointer::load(Trainer& t, const std::string& restart, bool force) {
  if (restart == "never") return start_fresh("run.restart = never");
  std::vector<std::string> candidates;
  if (restart == "auto") {
    candidates = resume_order(dir_);
    if (candidates.empty()) return start_fresh("no checkpoint to resume from");
  } else {
    if (!fs::exists(restart)) throw DeckError("run.restart = " + restart + ": no such checkpoint");
    candidates = {restart};
  }
  const ParamLayout& layout = t.layout();
  const int replicas = t.deck().dipaco.replica_mode == ReplicaMode::diloco ? t.topology().ranks_per_path : 1;
  // What this rank restores from a file written with `stored` replicas per path: its own
  // replica when the file has it, else replica 0 (another rank count: a warning says so).
  auto groups_for = [&](long stored) {
    std::vector<CheckpointGroup> groups;
    const int r = stored == replicas ? t.topology().rank_in_path(rank_) : 0;
    for (auto& ps : t.paths()) {
      groups.push_back({"/paths", layout.total, {{"params", ps.params.get()}, {"adam_m", ps.m.get()}, {"adam_v", ps.v.get()}},
                        ps.id, replicas > 1 ? r : 0});
      if (OuterOptimizer::error_feedback(t.deck())) groups.back().datasets.push_back({"outer_error", ps.outer_error.get()});
    }
    for (auto& u : t.outer().units())
      if (u.mine)
        groups.push_back({unit_path(u), layout.groups[u.group].size, {{"anchor", u.anchor.get()}, {"momentum", u.momentum.get()}}});
    return groups;
  };

  // Every rank must accept the same checkpoint: "" when all ranks got no error,
  // else the words of the lowest rank that found one (what every rank prints).
  auto agree = [&](const std::string& error) {
    std::string first;
    watched("agreeing on a checkpoint", [&] { first = first_error(error, world_); });
    return first;
  };
  for (const auto& file : candidates) {
    const long stored = stored_replicas(file, world_);
    if (replicas > 1 && stored != replicas && rank_ == 0)
      std::fprintf(stderr, "dipaco: warning: %s holds %ld DiLoCo replica(s) per path, this run %d: every replica resumes from replica 0\n",
                   file.c_str(), stored, replicas);
    const std::vector<CheckpointGroup> groups = groups_for(stored);
    // Verify the whole file first, so that a checkpoint that fails half-way
    // leaves the trainer's fresh state untouched.
    std::string error;
    try {
      read_checkpoint(file, world_, t.deck(), t.topology().paths, groups, nullptr, force);
    } catch (const CheckpointError& e) {
      error = e.what();
    }
    error = agree(error);
    if (error.empty()) {
      Progress pr;
      try {
        pr = read_checkpoint(file, world_, t.deck(), t.topology().paths, groups, &t.kernels(), force);
      } catch (const CheckpointError& e) {
        error = e.what();
      }
      error = agree(error);
      if (!error.empty()) throw CheckpointError("checkpoint " + file + " changed while it was read: " + error);
      for (auto& ps : t.paths()) ps.step = pr.step;
      t.progress() = pr;
      return file;
    }
    if (restart != "auto") throw CheckpointError("cannot restart from " + file + ": " + error);
    // Set aside, so that rotation never keeps it in place of a verified one.
    if (rank_ == 0) {
      std::error_code ec;
      fs::rename(file, file + ".corrupt", ec);
      std::fprintf(stderr, "dipaco: warning: skipping checkpoint %s: %s; %s\n", file.c_str(), error.c_str(),
                   ec ? ("it could not be renamed: " + ec.message()).c_str() : ("moved to " + file + ".corrupt").c_str());
    }
  }
  if (rank_ == 0) std::fprintf(stderr, "dipaco: warning: no usable checkpoint in %s; starting fresh\n", dir_.c_str());
  return start_fresh("no usable checkpoint");
}

}  // namespace dipaco
