// Checkpointer::save: the space preflight, the collective write of the file
// (header, topology, modules, paths, metrics), and its publication.
#include <sys/statvfs.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>

#include "dipaco/cmd/app.hpp"
#include "dipaco/dist/fault.hpp"
#include "dipaco/dist/watchdog.hpp"
#include "dipaco/io/checkpoint.hpp"
#include "dipaco/io/files.hpp"
#include "dipaco/io/h5_collective.hpp"
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
double check_space(Trainer& t, const std::string& dir, const std::string& file, int rank, MPI_Comm comm) {
  const double need = checkpoint_bytes(t);
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

// /paths: each path's whole arena (private groups and local module copies),
// AdamW moments and step; DiLoCo replicas differ, so each is stored, by its own rank.
void write_paths(hid_t f, Trainer& t, int rank, MPI_Comm comm) {
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
  const int replicas = t.deck().dipaco.replica_mode == "diloco" ? topo.ranks_per_path : 1;
  attr_long(paths, "replicas", replicas);
  // A rank's own copies of path p (replica r: the path's r-th rank) to the host; false when not its own.
  std::vector<float> a, m, v;
  auto fetch = [&](int p, int r) {
    if (rank != topo.ranks_of_path(p)[r]) return false;
    for (auto& ps : t.paths())
      if (ps.id == p) {
        a.resize(layout.total), m.resize(layout.total), v.resize(layout.total);
        t.kernels().to_host(a.data(), ps.params.get(), layout.total * sizeof(float));
        t.kernels().to_host(m.data(), ps.m.get(), layout.total * sizeof(float));
        t.kernels().to_host(v.data(), ps.v.get(), layout.total * sizeof(float));
        return true;
      }
    return false;
  };
  // The owners' checksums first, all agreed in one all-reduce (the data is fetched again below).
  std::vector<uint64_t> sums(size_t(3) * topo.paths * replicas, 0);
  for (int p = 0; p < topo.paths; ++p)
    for (int r = 0; r < replicas; ++r)
      if (fetch(p, r)) {
        uint64_t* s = &sums[3 * (size_t(p) * replicas + r)];
        s[0] = checksum(a.data(), a.size() * sizeof(float));
        s[1] = checksum(m.data(), m.size() * sizeof(float));
        s[2] = checksum(v.data(), v.size() * sizeof(float));
      }
  agree_checksums(sums, comm);
  for (int p = 0; p < topo.paths; ++p) {
    H5Id pg = make_group(paths, "P" + std::to_string(p));
    for (int r = 0; r < replicas; ++r) {
      const int owner = topo.ranks_of_path(p)[r];
      H5Id rg = r == 0 ? H5Id(H5Gopen2(pg, ".", H5P_DEFAULT), H5Gclose) : make_group(pg, "replica" + std::to_string(r));
      fetch(p, r);
      const uint64_t* s = &sums[3 * (size_t(p) * replicas + r)];
      write_owned_floats(rg, "params", layout.total, a.data(), s[0], owner, rank);
      write_owned_floats(rg, "adam_m", layout.total, m.data(), s[1], owner, rank);
      write_owned_floats(rg, "adam_v", layout.total, v.data(), s[2], owner, rank);
      if (r > 0) attr_long(rg, "step", steps[p]);
    }
    attr_long(pg, "step", steps[p]);
    attr_double(pg, "shard_tokens", t.shard_bytes()[p]);  // bytes; the name is the file format's
    write_attr_string(pg, "modules", join(topo.path_modules(p)));
  }
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

}  // namespace

std::string Checkpointer::save(Trainer& t) {
  const Progress& pr = t.progress();
  char name[64];
  std::snprintf(name, sizeof name, "ckpt-%08ld.h5", pr.step);
  const std::string final_path = dir_ + "/" + name, tmp = final_path + ".tmp";
  const double need = check_space(t, dir_, final_path, rank_, world_);

  bool ok = true;
  std::string error;
  begin_collective_writes();
  hid_t f = create_file(tmp, world_);
  try {
    write_header(f, t, rank_, world_);
    write_modules(f, t, rank_, world_);
    fault_point(deck_, "checkpoint");  // the modules are written, the paths not yet
    write_paths(f, t, rank_, world_);
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
