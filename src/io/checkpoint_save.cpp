// Checkpointer::save: the space preflight, the collective write of the file
// (header, topology, modules, paths, metrics), and its publication.
#include <sys/statvfs.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "dipaco/cmd/app.hpp"
#include "dipaco/dist/fault.hpp"
#include "dipaco/dist/watchdog.hpp"
#include "dipaco/io/checkpoint.hpp"
#include "dipaco/io/run_lock.hpp"
#include "dipaco/io/files.hpp"
#include "dipaco/io/h5_collective.hpp"
#include "dipaco/train/divergence.hpp"
#include "dipaco/train/trainer.hpp"
#include "dipaco_git.hpp"  // generated: the commit this binary was built from

namespace fs = std::filesystem;

namespace dipaco {

namespace {

std::string join(const std::vector<int>& v) {
  std::string s;
  for (int x : v) s += (s.empty() ? "" : ",") + std::to_string(x);
  return s;
}

void fsync_path(const std::string& p) {
  const int fd = ::open(p.c_str(), O_RDONLY);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

int unit_owner(const Topology& t, const SyncUnit& u) {
  if (u.path >= 0) return t.ranks_of_path(u.path)[0];
  if (u.level < 0) return 0;
  return t.module_ranks(u.level, u.module)[0];
}

// Refuses before touching the file system when the checkpoint cannot fit (a
// write that fails half-way inside collective MPI-IO calls can leave ranks
// waiting on each other). Returns the bytes it needs.
double check_space(Trainer& t, const std::vector<int>& stored, const std::string& dir, const std::string& file, int rank,
                   MPI_Comm comm) {
  const double need = checkpoint_bytes(t, stored);
  double avail = 0;
  if (rank == 0) {
    struct statvfs sv;
    avail = statvfs(dir.c_str(), &sv) == 0 ? double(sv.f_bavail) * sv.f_frsize : 1e300;
  }
  watched("the checkpoint's space check", [&] { MPI_Bcast(&avail, 1, MPI_DOUBLE, 0, comm); });
  if (avail < need * 1.05) {
    char msg[256];
    std::snprintf(msg, sizeof msg, "not enough space for checkpoint %s: needs %.2f MB, %.2f MB free", file.c_str(),
                  need / 1e6, avail / 1e6);
    throw CheckpointError(std::string(msg) + "; " + checkpoint_status(dir));
  }
  return need;
}

hid_t create_file(const std::string& tmp, MPI_Comm comm) {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
  H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL);
  // The 1.8 file format checksums HDF5's own metadata (superblock, object
  // headers): a corrupt header is refused by the library rather than decoded,
  // and libhdf5's decoders are not safe on corrupt input.
  H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_V18);
  hid_t f = -1;
  watched("creating a checkpoint file", [&] { f = H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl); });
  H5Pclose(fapl);
  if (f < 0) throw CheckpointError("cannot create checkpoint '" + tmp + "' (is the directory writable, the disk full?)");
  return f;
}

// Root attributes and /topology.
void write_header(hid_t f, Trainer& t, int rank, MPI_Comm comm) {
  const Progress& pr = t.progress();
  const Topology& topo = t.topology();
  int world_size;
  MPI_Comm_size(comm, &world_size);
  attr_long(f, "format_version", kCheckpointFormat);
  write_attr_string(f, "dipaco_version", DIPACO_VERSION);
  write_attr_string(f, "git_commit", DIPACO_GIT);
  write_attr_string(f, "deck", t.deck().text());
  attr_long(f, "world_size", world_size);
  write_attr_string(f, "stage", "train");
  attr_long(f, "outer_round", pr.rounds);
  attr_long(f, "inner_step", pr.step);
  attr_double(f, "wall_time", pr.elapsed);

  H5Id g = make_group(f, "topology");
  attr_long(g, "levels", topo.levels());
  attr_long(g, "paths", topo.paths);
  attr_array<int>(g, "modules_per_level", H5T_NATIVE_INT, topo.modules_per_level);
  // Per level, 1 where its modules are private to each path (path P<p> holds module P<p> there).
  std::vector<int> private_flags;
  for (int l = 0; l < topo.levels(); ++l) private_flags.push_back(topo.is_private(l) ? 1 : 0);
  attr_array<int>(g, "private_levels", H5T_NATIVE_INT, private_flags);
  std::vector<int> table;
  for (int p = 0; p < topo.paths; ++p)
    for (int m : topo.path_modules(p)) table.push_back(m);
  write_small(g, "path_table", H5T_NATIVE_INT, {hsize_t(topo.paths), hsize_t(topo.levels())}, table.data(), rank, comm);
}

// Index of a group: name, offset and shape of every view, so that a user can
// read one tensor by name.
void write_index(hid_t g, const ParamGroup& grp) {
  std::string names, shapes;
  std::vector<long> offsets;
  for (const auto& v : grp.views) {
    names += v.name + "\n";
    std::string sh;
    for (int d : v.shape) sh += (sh.empty() ? "" : "x") + std::to_string(d);
    shapes += sh + "\n";
    offsets.push_back(long(v.offset));
  }
  write_attr_string(g, "index_names", names);
  write_attr_string(g, "index_shapes", shapes);
  attr_array<long>(g, "index_offsets", H5T_NATIVE_LONG, offsets);
}

// /modules: each sync unit's anchor and outer momentum, written by the lowest rank holding it.
void write_modules(hid_t f, Trainer& t, int rank, MPI_Comm comm) {
  const Topology& topo = t.topology();
  const ParamLayout& layout = t.layout();
  H5Id mods = make_group(f, "modules");
  std::vector<H5Id> level_groups;
  for (int l = 0; l < topo.levels(); ++l) level_groups.push_back(make_group(mods, "L" + std::to_string(l)));
  H5Id path_embeddings;
  for (auto& u : t.outer().units())
    if (u.level < 0 && u.path >= 0 && !path_embeddings.ok()) path_embeddings = make_group(mods, "path_embeddings");
  const auto& units = t.outer().units();
  // A unit's anchor and momentum to the host on its owner; false elsewhere.
  std::vector<float> anchor, momentum;
  auto fetch = [&](const SyncUnit& u) {
    if (rank != unit_owner(topo, u)) return false;
    const size_t n = layout.groups[u.group].size;
    anchor.resize(n), momentum.resize(n);
    t.kernels().to_host(anchor.data(), u.anchor.get(), n * sizeof(float));
    t.kernels().to_host(momentum.data(), u.momentum.get(), n * sizeof(float));
    return true;
  };
  // The owners' checksums first, all agreed in one all-reduce (the data is fetched again below).
  std::vector<uint64_t> sums(2 * units.size(), 0);
  for (size_t i = 0; i < units.size(); ++i)
    if (fetch(units[i])) {
      sums[2 * i] = checksum(anchor.data(), anchor.size() * sizeof(float));
      sums[2 * i + 1] = checksum(momentum.data(), momentum.size() * sizeof(float));
    }
  agree_checksums(sums, comm);
  for (size_t i = 0; i < units.size(); ++i) {
    const auto& u = units[i];
    const auto& grp = layout.groups[u.group];
    H5Id ug = u.level >= 0 ? make_group(level_groups[u.level], u.path < 0 ? "M" + std::to_string(u.module) : "P" + std::to_string(u.path))
              : u.path < 0 ? make_group(mods, "embeddings")
                           : make_group(path_embeddings, "P" + std::to_string(u.path));
    const int owner = unit_owner(topo, u);
    fetch(u);
    write_owned_floats(ug, "anchor", grp.size, anchor.data(), sums[2 * i], owner, rank);
    write_owned_floats(ug, "momentum", grp.size, momentum.data(), sums[2 * i + 1], owner, rank);
    write_index(ug, grp);
    write_attr_string(ug, "paths", join(u.paths));
  }
  agree_written(rank, comm);
}

// One path array ([paths, replicas, columns] over the `stored` groups): the
// owners' piece checksums agreed in one all-reduce, then each owner writes its rows.
void write_path_array(hid_t pg, const std::string& kind, const std::vector<int>& stored, Trainer& t, int replicas, int rank,
                      MPI_Comm comm) {
  const Topology& topo = t.topology();
  const ParamLayout& layout = t.layout();
  size_t cols = 0;
  std::string names;
  for (int g : stored) cols += layout.groups[g].size, names += layout.groups[g].name + "\n";
  auto buffer_of = [&](PathState& ps) {
    return kind == "params" ? ps.params.get() : kind == "adam_m" ? ps.m.get() : kind == "adam_v" ? ps.v.get() : ps.outer_error.get();
  };
  // This rank's row of path p, replica r, packed (stored groups only); false when not its own.
  std::vector<float> arena, row;
  auto fetch = [&](int p, int r) {
    if (rank != topo.ranks_of_path(p)[r]) return false;
    for (auto& ps : t.paths())
      if (ps.id == p) {
        arena.resize(layout.total), row.resize(cols);
        t.kernels().to_host(arena.data(), buffer_of(ps), layout.total * sizeof(float));
        size_t c = 0;
        for (int g : stored) {
          const auto& grp = layout.groups[g];
          std::copy_n(arena.data() + grp.offset, grp.size, row.data() + c);
          c += grp.size;
        }
        return true;
      }
    return false;
  };
  const size_t G = stored.size();
  std::vector<uint64_t> sums(size_t(topo.paths) * replicas * G, 0);
  for (int p = 0; p < topo.paths; ++p)
    for (int r = 0; r < replicas; ++r)
      if (fetch(p, r))
        for (size_t i = 0, c = 0; i < G; c += layout.groups[stored[i]].size, ++i)
          sums[(size_t(p) * replicas + r) * G + i] = checksum(row.data() + c, layout.groups[stored[i]].size * sizeof(float));
  agree_checksums(sums, comm);
  CollectiveScope wait("writing the paths' arrays");
  const hsize_t dims[3] = {hsize_t(topo.paths), hsize_t(replicas), hsize_t(cols)};
  H5Id fs(H5Screate_simple(3, dims, nullptr), H5Sclose);
  H5Id d(checked(H5Dcreate2(pg, kind.c_str(), H5T_NATIVE_FLOAT, fs, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
                 "create dataset /paths/" + kind),
         H5Dclose);
  write_attr_string(d, "groups", names);
  const hsize_t sdims[3] = {hsize_t(topo.paths), hsize_t(replicas), hsize_t(G)};
  attr_dims<uint64_t>(d, "checksums", H5T_NATIVE_UINT64, sums, 3, sdims);
  for (int p = 0; p < topo.paths && cols; ++p)
    for (int r = 0; r < replicas; ++r)
      if (fetch(p, r)) {
        const hsize_t start[3] = {hsize_t(p), hsize_t(r), 0}, count[3] = {1, 1, hsize_t(cols)};
        H5Id ms(H5Screate_simple(1, &count[2], nullptr), H5Sclose);
        errno = 0;
        if (H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, nullptr, count, nullptr) < 0 ||
            H5Dwrite(d, H5T_NATIVE_FLOAT, ms, fs, H5P_DEFAULT, row.data()) < 0)
          note_failed_write();
      }
}

// /paths: every path's arrays, one dataset per kind; DiLoCo replicas differ,
// so each is a row of its own, written by its own rank.
void write_paths(hid_t f, Trainer& t, const std::vector<int>& stored, int rank, MPI_Comm comm) {
  const Topology& topo = t.topology();
  const ParamLayout& layout = t.layout();
  H5Id paths = make_group(f, "paths");
  std::string arena_names;
  for (const auto& grp : layout.groups)
    arena_names += grp.name + ":" + std::to_string(grp.offset) + ":" + std::to_string(grp.size) + "\n";
  write_attr_string(paths, "arena_groups", arena_names);
  std::vector<long> steps(topo.paths, 0);
  for (auto& p : t.paths()) steps[p.id] = p.step;
  watched("agreeing on the paths' steps", [&] { MPI_Allreduce(MPI_IN_PLACE, steps.data(), topo.paths, MPI_LONG, MPI_MAX, comm); });
  const int replicas = t.deck().dipaco.replica_mode == ReplicaMode::diloco ? topo.ranks_per_path : 1;
  attr_long(paths, "replicas", replicas);
  attr_array<long>(paths, "steps", H5T_NATIVE_LONG, steps);
  attr_array<double>(paths, "shard_tokens", H5T_NATIVE_DOUBLE, t.shard_bytes());  // bytes; the name is the file format's
  std::vector<int> all(layout.groups.size());
  for (size_t g = 0; g < all.size(); ++g) all[g] = int(g);
  write_path_array(paths, "params", stored, t, replicas, rank, comm);
  write_path_array(paths, "adam_m", all, t, replicas, rank, comm);
  write_path_array(paths, "adam_v", all, t, replicas, rank, comm);
  if (OuterOptimizer::error_feedback(t.deck())) write_path_array(paths, "outer_error", all, t, replicas, rank, comm);
  agree_written(rank, comm);
}

// /metrics: one row per evaluation.
void write_metrics(hid_t f, const Progress& pr, int paths, int rank, MPI_Comm comm) {
  H5Id mg = make_group(f, "metrics");
  const hsize_t n = pr.eval_bpb.size();
  write_small(mg, "eval_step", H5T_NATIVE_DOUBLE, {n}, pr.eval_step.data(), rank, comm);
  write_small(mg, "eval_bpb", H5T_NATIVE_DOUBLE, {n}, pr.eval_bpb.data(), rank, comm);
  write_small(mg, "eval_path_bpb", H5T_NATIVE_DOUBLE, {n, hsize_t(paths)}, pr.eval_path_bpb.data(), rank, comm);
}

// HDF5 can neither close a file whose collective flush fails on some ranks
// only nor shut down with it open (a crash in MPI_Finalize): every rank,
// agreed, leaves without either, as the watchdog does.
[[noreturn]] void abandon(const std::string& tmp, const std::string& file, const std::string& dir, const AbandonFile& e,
                          int rank, MPI_Comm comm) {
  std::error_code ec;
  if (rank == 0) {
    fs::remove(tmp, ec);
    std::fprintf(stderr, "dipaco: error: writing checkpoint '%s' failed: %s (disk full or a file-size limit?); %s\n",
                 file.c_str(), e.what(), checkpoint_status(dir).c_str());
  }
  std::fflush(stdout);
  std::fflush(stderr);
  MPI_Barrier(comm);
  release_run_lock();
  _exit(kExitFailure);
}

// Collective: closes the file and agrees that every rank wrote its part.
void close_file(hid_t f, bool ok, std::string error, const std::string& tmp, const std::string& file, const std::string& dir,
                int rank, MPI_Comm comm) {
  int all_ok = 0;
  watched("closing a checkpoint", [&] {
    if (H5Fclose(f) < 0) {
      ok = false;
      if (error.empty()) error = "HDF5 failed to close the checkpoint";
    }
    all_ok = ok;
    MPI_Allreduce(MPI_IN_PLACE, &all_ok, 1, MPI_INT, MPI_MIN, comm);
  });
  if (all_ok) return;
  std::error_code ec;
  if (rank == 0) fs::remove(tmp, ec);
  MPI_Barrier(comm);
  throw CheckpointError("writing checkpoint '" + file + "' failed" + (error.empty() ? " on another rank" : ": " + error) +
                        " (disk full or a file-size limit?); " + checkpoint_status(dir));
}

// Rank 0 publishes the file; every rank learns whether that worked, so a
// failure ends the job on all of them with one message.
void publish(const std::string& tmp, const std::string& file, const std::string& name, const std::string& dir, int keep,
             int rank, MPI_Comm comm) {
  std::string publish_error;
  if (rank == 0) {
    try {
      fsync_path(tmp);
      fs::rename(tmp, file);
      write_file_atomic(dir + "/latest", name + "\n");
      fsync_path(dir);
      rotate_checkpoints(dir, file, keep);
    } catch (const std::exception& e) {
      publish_error = e.what();
    }
  }
  int published = publish_error.empty();
  watched("publishing a checkpoint", [&] { MPI_Bcast(&published, 1, MPI_INT, 0, comm); });
  if (!published)
    throw CheckpointError("checkpoint '" + file + "' was written but could not be made the latest: " +
                          (rank == 0 ? publish_error : std::string("on rank 0")) + "; " + checkpoint_status(dir));
}

// Collective: what a checkpoint would hold is finite on every rank, else every
// rank refuses it (the latest checkpoint stays the last good one).
void refuse_nonfinite(Trainer& t, const std::string& file, MPI_Comm comm) {
  Kernels& k = t.kernels();
  const size_t total = t.layout().total;
  auto finite = [&](const float* x, size_t n) { return !x || std::isfinite(k.sum_squares(x, n)); };
  int bad = -1;  // the lowest path whose arrays are not finite (or P for an anchor)
  for (auto& p : t.paths())
    if (!finite(p.params.get(), total) || !finite(p.m.get(), total) || !finite(p.v.get(), total) ||
        !finite(p.outer_error.get(), total))
      if (bad < 0 || p.id < bad) bad = p.id;
  for (const auto& u : t.outer().units())
    if (u.mine && bad < 0) {
      const size_t n = t.layout().groups[u.group].size;
      if (!finite(u.anchor.get(), n) || !finite(u.momentum.get(), n)) bad = t.topology().paths;
    }
  int first = bad < 0 ? INT_MAX : bad;
  watched("agreeing that a checkpoint is finite", [&] { MPI_Allreduce(MPI_IN_PLACE, &first, 1, MPI_INT, MPI_MIN, comm); });
  if (first == INT_MAX) return;
  throw DivergedError("refusing to write checkpoint " + file + ": " +
                      (first < t.topology().paths ? "path " + std::to_string(first) + "'s weights or moments are"
                                                  : std::string("an anchor is")) +
                      " not finite; the latest checkpoint is still the last good one");
}

}  // namespace

// The arena groups params stores (see path_arrays.hpp): all but those that
// every path holds as a synced module's copy equal to its anchor (agreed by
// all ranks; right after an outer round that is every synced group).
std::vector<int> params_groups(Trainer& t, MPI_Comm comm) {
  const ParamLayout& layout = t.layout();
  const auto& units = t.outer().units();
  std::vector<int> from_anchor(layout.groups.size(), 1);
  std::vector<std::vector<char>> covered(layout.groups.size(), std::vector<char>(t.topology().paths, 0));
  for (const auto& u : units)
    for (int p : u.paths) covered[u.group][p] = 1;
  for (size_t g = 0; g < layout.groups.size(); ++g)
    for (char c : covered[g]) from_anchor[g] &= c;
  std::vector<float> local, anchor;
  for (const auto& u : units) {
    if (!u.mine || !from_anchor[u.group]) continue;
    const auto& grp = layout.groups[u.group];
    anchor.resize(grp.size), local.resize(grp.size);
    t.kernels().to_host(anchor.data(), u.anchor.get(), grp.size * sizeof(float));
    for (auto& ps : t.paths())
      if (std::find(u.paths.begin(), u.paths.end(), ps.id) != u.paths.end()) {
        t.kernels().to_host(local.data(), ps.params.get() + grp.offset, grp.size * sizeof(float));
        if (std::memcmp(local.data(), anchor.data(), grp.size * sizeof(float)) != 0) from_anchor[u.group] = 0;
      }
  }
  watched("agreeing on the stored groups", [&] {
    MPI_Allreduce(MPI_IN_PLACE, from_anchor.data(), int(from_anchor.size()), MPI_INT, MPI_MIN, comm);
  });
  std::vector<int> stored;
  for (size_t g = 0; g < layout.groups.size(); ++g)
    if (!from_anchor[g]) stored.push_back(int(g));
  return stored;
}

std::string Checkpointer::save(Trainer& t) {
  const Progress& pr = t.progress();
  char name[64];
  std::snprintf(name, sizeof name, "ckpt-%08ld.h5", pr.step);
  const std::string final_path = dir_ + "/" + name, tmp = final_path + ".tmp";
  refuse_nonfinite(t, final_path, world_);
  const std::vector<int> stored = params_groups(t, world_);
  const double need = check_space(t, stored, dir_, final_path, rank_, world_);

  bool ok = true;
  std::string error;
  begin_collective_writes();
  hid_t f = create_file(tmp, world_);
  try {
    write_header(f, t, rank_, world_);
    write_modules(f, t, rank_, world_);
    fault_point(deck_, "checkpoint");  // the modules are written, the paths not yet
    write_paths(f, t, stored, rank_, world_);
    write_metrics(f, pr, t.topology().paths, rank_, world_);
    watched("flushing a checkpoint", [&] {
      reserve_room(need, tmp, rank_, world_);
      check(H5Fflush(f, H5F_SCOPE_GLOBAL), "flush the checkpoint");
    });
  } catch (const AbandonFile& e) {
    abandon(tmp, final_path, dir_, e, rank_, world_);
  } catch (const CheckpointError& e) {
    ok = false;
    error = e.what();
  }
  close_file(f, ok, error, tmp, final_path, dir_, rank_, world_);
  publish(tmp, final_path, name, dir_, deck_.checkpoint.keep, rank_, world_);
  return final_path;
}

}  // namespace dipaco
