#include "dipaco/io/checkpoint.hpp"
#include "dipaco/dist/fault.hpp"
#include "dipaco/dist/watchdog.hpp"

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/statvfs.h>
#include <hdf5.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "dipaco/cmd/app.hpp"
#include "dipaco/io/files.hpp"
#include "dipaco/train/trainer.hpp"
#include "dipaco/io/h5io.hpp"

namespace fs = std::filesystem;

namespace dipaco {

constexpr long kFormatVersion = 1;

uint64_t checksum(const void* data, size_t bytes) {
  const unsigned char* p = static_cast<const unsigned char*>(data);
  uint64_t h = 1469598103934665603ULL;
  for (size_t i = 0; i < bytes; ++i) h = (h ^ p[i]) * 1099511628211ULL;
  return h;
}

namespace {

// --- attributes (collective on create: every rank passes the same value) ---
template <typename T>
void attr_array(hid_t obj, const char* name, hid_t type, const std::vector<T>& v) {
  hsize_t n = v.size();
  H5Id sp(H5Screate_simple(1, &n, nullptr), H5Sclose);
  H5Id a(checked(H5Acreate2(obj, name, type, sp, H5P_DEFAULT, H5P_DEFAULT), std::string("create attribute ") + name), H5Aclose);
  check(H5Awrite(a, type, v.data()), std::string("write attribute ") + name);
}
void attr_long(hid_t obj, const char* name, long v) { attr_array<long>(obj, name, H5T_NATIVE_LONG, {v}); }
void attr_double(hid_t obj, const char* name, double v) { attr_array<double>(obj, name, H5T_NATIVE_DOUBLE, {v}); }
void attr_u64(hid_t obj, const char* name, uint64_t v) { attr_array<uint64_t>(obj, name, H5T_NATIVE_UINT64, {v}); }

// Closed on scope exit, also when an error is thrown: a handle left open
// would keep the file open until HDF5's own shutdown, which can then crash.
H5Id make_group(hid_t parent, const std::string& name) {
  CollectiveScope wait("creating a checkpoint group");
  return H5Id(checked(H5Gcreate2(parent, name.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), "create group " + name));
}

// A failed data write (a full disk, a file-size limit) is agreed on by all
// ranks right after the write, and the job then ends without closing the
// file: HDF5 cannot flush metadata collectively once one rank's write failed
// (the ranks end up in different collectives and wait forever).
bool g_data_write_failed = false;
int g_write_errno = 0;
struct AbandonFile : CheckpointError {
  using CheckpointError::CheckpointError;
};

void note_write(herr_t e) {
  if (e < 0 && !g_data_write_failed) g_data_write_failed = true, g_write_errno = errno ? errno : EIO;
}

// Collective: throws AbandonFile on every rank when a write failed on any.
void agree_written(int rank, MPI_Comm comm) {
  CollectiveScope wait("agreeing on a checkpoint write");
  int who = g_data_write_failed ? rank + 1 : 0, err = g_write_errno;
  MPI_Allreduce(MPI_IN_PLACE, &who, 1, MPI_INT, MPI_MAX, comm);
  if (!who) return;
  MPI_Bcast(&err, 1, MPI_INT, who - 1, comm);
  throw AbandonFile("a write failed on rank " + std::to_string(who - 1) + " (" + std::strerror(err) + ")");
}

// A 1-D float dataset created by every rank, written by `owner` alone, with
// its checksum attribute (broadcast from the owner).
void write_floats(hid_t loc, const std::string& name, size_t n, const float* data, int owner, int rank, MPI_Comm comm) {
  CollectiveScope wait("writing a checkpoint dataset");  // one dataset: the wait for a peer, not the whole file
  uint64_t sum = rank == owner ? checksum(data, n * sizeof(float)) : 0;
  MPI_Bcast(&sum, 1, MPI_UINT64_T, owner, comm);
  hsize_t dims = n;
  H5Id sp(H5Screate_simple(1, &dims, nullptr), H5Sclose);
  H5Id d(checked(H5Dcreate2(loc, name.c_str(), H5T_NATIVE_FLOAT, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
                 "create dataset " + name));
  attr_u64(d, "checksum", sum);
  errno = 0;
  if (rank == owner) note_write(H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, data));
  agree_written(rank, comm);
}

// Small metadata datasets, the same on every rank, written by rank 0.
template <typename T>
void write_small(hid_t loc, const std::string& name, hid_t type, const std::vector<hsize_t>& dims, const T* data, int rank,
                 MPI_Comm comm) {
  H5Id sp(H5Screate_simple(int(dims.size()), dims.data(), nullptr), H5Sclose);
  H5Id d(checked(H5Dcreate2(loc, name.c_str(), type, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), "create dataset " + name));
  errno = 0;
  if (rank == 0) note_write(H5Dwrite(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data));
  agree_written(rank, comm);
}

// Collective, before the metadata flush: every rank may write the whole file
// (its own ulimit -f) and rank 0 reserves its space, so that the flush and
// close, which no rank may leave half-way, cannot fail for lack of room.
// `bytes` is the space preflight's estimate (a little above the real size;
// HDF5 does not report a parallel file's size before it is closed).
void reserve_room(double bytes, const std::string& tmp, int rank, MPI_Comm comm) {
  const off_t want = off_t(bytes);
  struct rlimit rl;
  if (getrlimit(RLIMIT_FSIZE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && off_t(rl.rlim_cur) < want)
    g_data_write_failed = true, g_write_errno = EFBIG;
  if (rank == 0 && !g_data_write_failed) {
    int fd = ::open(tmp.c_str(), O_WRONLY);
    int e = fd < 0 ? errno : ::fallocate(fd, 0, 0, want) == 0 ? 0 : errno;  // no emulation where unsupported
    if (fd >= 0) ::close(fd);
    if (e && e != EOPNOTSUPP && e != EINVAL) g_data_write_failed = true, g_write_errno = e;
  }
  agree_written(rank, comm);
}

// A path's private embeddings averaged among its DiLoCo replicas are unit
// (level -1, module p): /modules/path_embeddings/P<p>.
std::string unit_path(const SyncUnit& u) {
  if (u.level < 0) return u.module < 0 ? "/modules/embeddings" : "/modules/path_embeddings/P" + std::to_string(u.module);
  return "/modules/L" + std::to_string(u.level) + "/M" + std::to_string(u.module);
}

int unit_owner(const Topology& t, const SyncUnit& u) {
  if (u.level < 0) return u.module < 0 ? 0 : t.ranks_of_path(u.module)[0];
  return t.module_ranks(u.level, u.module)[0];
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

// The group of replica r of path p: replica 0 is the path's own group (what
// inspect and export read); DiLoCo replicas r > 0 below it as replica<r>.
std::string replica_path(int p, int r) {
  return "/paths/P" + std::to_string(p) + (r == 0 ? "" : "/replica" + std::to_string(r));
}

std::map<std::string, std::string> parse_deck_text(const std::string& text) {
  std::map<std::string, std::string> out;
  std::istringstream in(text);
  std::string line, section;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    if (line[0] == '[') {
      section = line.substr(1, line.find(']') - 1);
      continue;
    }
    auto eq = line.find(" = ");
    if (eq != std::string::npos) out[section + "." + line.substr(0, eq)] = line.substr(eq + 3);
  }
  return out;
}

void fsync_path(const std::string& p) {
  int fd = ::open(p.c_str(), O_RDONLY);
  if (fd >= 0) ::fsync(fd), ::close(fd);
}

}  // namespace

std::vector<std::string> incompatible_keys(const std::string& saved, const Deck& now) {
  auto old = parse_deck_text(saved);
  std::vector<std::string> diff;
  for (const char* k : {"model.d_model", "model.n_layers", "model.n_heads", "model.context", "model.layers_per_level",
                        "dipaco.modules_per_level", "dipaco.shared"}) {
    auto it = old.find(k);
    if (it == old.end() || it->second != now.values.at(k))
      diff.push_back(std::string(k) + " (checkpoint: " + (it == old.end() ? "?" : it->second.substr(0, 80)) + ", deck: " +
                     now.values.at(k) + ")");
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

std::string Checkpointer::save(Trainer& t) {
  const Progress& pr = t.progress();
  char name[64];
  std::snprintf(name, sizeof name, "ckpt-%08ld.h5", pr.step);
  const std::string final_path = dir_ + "/" + name, tmp = final_path + ".tmp";
  const Topology& topo = t.topology();
  const ParamLayout& layout = t.layout();
  Kernels& k = t.kernels();
  int world_size;
  MPI_Comm_size(world_, &world_size);

  // Preflight: refuse before touching the file system when the checkpoint
  // cannot fit. (A write that fails half-way inside collective MPI-IO calls
  // can leave ranks waiting on each other.)
  const double need = checkpoint_bytes(t);
  double avail = 0;
  if (rank_ == 0) {
    struct statvfs sv;
    avail = statvfs(dir_.c_str(), &sv) == 0 ? double(sv.f_bavail) * sv.f_frsize : 1e300;
  }
  watched("the checkpoint's space check", [&] { MPI_Bcast(&avail, 1, MPI_DOUBLE, 0, world_); });
  if (avail < need * 1.05) {
    char msg[256];
    std::snprintf(msg, sizeof msg, "not enough space for checkpoint %s: needs %.2f MB, %.2f MB free", final_path.c_str(),
                  need / 1e6, avail / 1e6);
    throw CheckpointError(std::string(msg) + "; " + checkpoint_status(dir_));
  }

  bool ok = true;
  std::string error;
  g_data_write_failed = false, g_write_errno = 0;
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
  H5Pset_fapl_mpio(fapl, world_, MPI_INFO_NULL);
  // The 1.8 file format checksums HDF5's own metadata (superblock, object
  // headers): a corrupt header is refused by the library rather than decoded,
  // and libhdf5's decoders are not safe on corrupt input.
  H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_V18);
  hid_t f = -1;
  watched("creating a checkpoint file", [&] { f = H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl); });
  H5Pclose(fapl);
  if (f < 0) throw CheckpointError("cannot create checkpoint '" + tmp + "' (is the directory writable, the disk full?)");
  try {
    attr_long(f, "format_version", kFormatVersion);
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
    std::vector<int> table;
    for (int p = 0; p < topo.paths; ++p)
      for (int m : topo.path_modules(p)) table.push_back(m);
    write_small(g, "path_table", H5T_NATIVE_INT, {hsize_t(topo.paths), hsize_t(topo.levels())}, table.data(), rank_, world_);

    // Modules: anchor and outer momentum, owned by the lowest rank holding them.
    H5Id mods = make_group(f, "modules");
    std::vector<H5Id> level_groups;
    for (int l = 0; l < topo.levels(); ++l) level_groups.push_back(make_group(mods, "L" + std::to_string(l)));
    std::vector<H5Id> path_embeddings;
    for (auto& u : t.outer().units())
      if (u.level < 0 && u.module >= 0 && path_embeddings.empty()) path_embeddings.push_back(make_group(mods, "path_embeddings"));
    std::vector<float> host;
    for (auto& u : t.outer().units()) {
      const auto& grp = layout.groups[u.group];
      H5Id ug = u.level >= 0  ? make_group(level_groups[u.level], "M" + std::to_string(u.module))
                : u.module < 0 ? make_group(mods, "embeddings")
                               : make_group(path_embeddings[0], "P" + std::to_string(u.module));
      int owner = unit_owner(topo, u);
      host.assign(grp.size, 0.0f);
      std::vector<float> mom(grp.size, 0.0f);
      if (rank_ == owner) {
        k.to_host(host.data(), u.anchor.get(), grp.size * sizeof(float));
        k.to_host(mom.data(), u.momentum.get(), grp.size * sizeof(float));
      }
      write_floats(ug, "anchor", grp.size, host.data(), owner, rank_, world_);
      write_floats(ug, "momentum", grp.size, mom.data(), owner, rank_, world_);
      // Index: name, offset, shape of every view, so a user can read one tensor by name.
      std::string names, shapes;
      std::vector<long> offsets;
      for (const auto& v : grp.views) {
        names += v.name + "\n";
        std::string sh;
        for (int d : v.shape) sh += (sh.empty() ? "" : "x") + std::to_string(d);
        shapes += sh + "\n";
        offsets.push_back(long(v.offset));
      }
      write_attr_string(ug, "index_names", names);
      write_attr_string(ug, "index_shapes", shapes);
      attr_array<long>(ug, "index_offsets", H5T_NATIVE_LONG, offsets);
      write_attr_string(ug, "paths", [&] {
        std::string s;
        for (int p : u.paths) s += (s.empty() ? "" : ",") + std::to_string(p);
        return s;
      }());
    }
    fault_point(deck_, "checkpoint");  // the modules are written, the paths not yet

    // Paths: the whole arena (private groups and local module copies), AdamW moments, step.
    H5Id paths = make_group(f, "paths");
    std::string arena_names;
    for (const auto& grp : layout.groups) arena_names += grp.name + ":" + std::to_string(grp.offset) + ":" + std::to_string(grp.size) + "\n";
    write_attr_string(paths, "arena_groups", arena_names);
    std::vector<long> steps(topo.paths, 0);
    for (auto& p : t.paths()) steps[p.id] = p.step;
    watched("agreeing on the paths' steps", [&] { MPI_Allreduce(MPI_IN_PLACE, steps.data(), topo.paths, MPI_LONG, MPI_MAX, world_); });
    // DiLoCo replicas differ: each is stored (written by its own rank).
    const int replicas = t.deck().dipaco.replica_mode == "diloco" ? topo.ranks_per_path : 1;
    attr_long(paths, "replicas", replicas);
    std::vector<float> a(layout.total), m(layout.total), v(layout.total);
    for (int p = 0; p < topo.paths; ++p) {
      H5Id pg = make_group(paths, "P" + std::to_string(p));
      for (int r = 0; r < replicas; ++r) {
        const int owner = topo.ranks_of_path(p)[r];
        H5Id rg = r == 0 ? H5Id(H5Gopen2(pg, ".", H5P_DEFAULT), H5Gclose) : make_group(pg, "replica" + std::to_string(r));
        if (rank_ == owner)
          for (auto& ps : t.paths())
            if (ps.id == p) {
              k.to_host(a.data(), ps.params.get(), layout.total * sizeof(float));
              k.to_host(m.data(), ps.m.get(), layout.total * sizeof(float));
              k.to_host(v.data(), ps.v.get(), layout.total * sizeof(float));
            }
        write_floats(rg, "params", layout.total, a.data(), owner, rank_, world_);
        write_floats(rg, "adam_m", layout.total, m.data(), owner, rank_, world_);
        write_floats(rg, "adam_v", layout.total, v.data(), owner, rank_, world_);
        if (r > 0) attr_long(rg, "step", steps[p]);
      }
      attr_long(pg, "step", steps[p]);
      attr_double(pg, "shard_tokens", t.shard_tokens()[p]);
      std::string mods_s;
      for (int mm : topo.path_modules(p)) mods_s += (mods_s.empty() ? "" : ",") + std::to_string(mm);
      write_attr_string(pg, "modules", mods_s);
    }

    H5Id mg = make_group(f, "metrics");
    write_small(mg, "eval_step", H5T_NATIVE_DOUBLE, {hsize_t(pr.eval_step.size())}, pr.eval_step.data(), rank_, world_);
    write_small(mg, "eval_bpb", H5T_NATIVE_DOUBLE, {hsize_t(pr.eval_bpb.size())}, pr.eval_bpb.data(), rank_, world_);
    write_small(mg, "eval_path_bpb", H5T_NATIVE_DOUBLE, {hsize_t(pr.eval_bpb.size()), hsize_t(topo.paths)},
                pr.eval_path_bpb.data(), rank_, world_);
    watched("flushing a checkpoint", [&] {
      reserve_room(need, tmp, rank_, world_);
      check(H5Fflush(f, H5F_SCOPE_GLOBAL), "flush the checkpoint");
    });
  } catch (const AbandonFile& e) {
    // HDF5 can neither close this file (its collective flush fails on some
    // ranks only) nor shut down with it open (a crash in MPI_Finalize): every
    // rank, agreed here, leaves without either, as the watchdog does.
    std::error_code ec;
    if (rank_ == 0) {
      fs::remove(tmp, ec);
      std::fprintf(stderr, "dipaco: error: writing checkpoint '%s' failed: %s (disk full or a file-size limit?); %s\n",
                   final_path.c_str(), e.what(), checkpoint_status(dir_).c_str());
    }
    std::fflush(stdout), std::fflush(stderr);
    MPI_Barrier(world_);
    _exit(kExitFailure);
  } catch (const CheckpointError& e) {
    ok = false, error = e.what();
  }
  int all_ok = 0;
  watched("closing a checkpoint", [&] {
    if (H5Fclose(f) < 0) ok = false, error = error.empty() ? "HDF5 failed to close the checkpoint" : error;
    all_ok = ok;
    MPI_Allreduce(MPI_IN_PLACE, &all_ok, 1, MPI_INT, MPI_MIN, world_);
  });
  if (!all_ok) {
    std::error_code ec;
    if (rank_ == 0) fs::remove(tmp, ec);
    MPI_Barrier(world_);
    throw CheckpointError("writing checkpoint '" + final_path + "' failed" + (error.empty() ? " on another rank" : ": " + error) +
                          " (disk full or a file-size limit?); " + checkpoint_status(dir_));
  }
  // Rank 0 publishes the file; every rank learns whether that worked, so a
  // failure ends the job on all of them with one message.
  std::string publish_error;
  if (rank_ == 0) {
    try {
      fsync_path(tmp);
      fs::rename(tmp, final_path);
      write_file_atomic(dir_ + "/latest", std::string(name) + "\n");
      fsync_path(dir_);
      rotate_checkpoints(dir_, final_path, deck_.checkpoint.keep);
    } catch (const std::exception& e) {
      publish_error = e.what();
    }
  }
  int published = publish_error.empty();
  watched("publishing a checkpoint", [&] { MPI_Bcast(&published, 1, MPI_INT, 0, world_); });
  if (!published)
    throw CheckpointError("checkpoint '" + final_path + "' was written but could not be made the latest: " +
                          (rank_ == 0 ? publish_error : std::string("on rank 0")) + "; " + checkpoint_status(dir_));
  return final_path;
}

Progress read_checkpoint(const std::string& file, MPI_Comm comm, const Deck& deck, int paths,
                         const std::vector<CheckpointGroup>& groups, Kernels* kernels, bool force) {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  H5Id fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
  H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL);
  H5Id f;
  watched("opening a checkpoint", [&] { f = H5Id(H5Fopen(file.c_str(), H5F_ACC_RDONLY, fapl), H5Fclose); });
  if (!f.ok()) throw CheckpointError(file + ": not a readable HDF5 file (truncated or corrupt)");
  long version = read_attr_scalar<long>(f, "format_version", H5T_NATIVE_LONG);
  if (version != kFormatVersion) throw CheckpointError(file + ": format version " + std::to_string(version) + " unsupported");
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

  size_t largest = 0;
  for (const auto& g : groups) largest = std::max(largest, g.size);
  std::vector<float> host(largest);
  for (const auto& g : groups) {
    H5Id group = open_group(f, g.path);
    for (const auto& [name, dst] : g.datasets) {
      read_floats(group, name, g.size, host.data(), file);
      if (kernels) kernels->to_device(dst, host.data(), g.size * sizeof(float));
    }
    if (g.is_path && read_attr_long(group, "step", 0, kMaxStep) != pr.step)
      throw CheckpointError(file + ": " + g.path + " is at another step than the checkpoint");
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
    candidates = list_checkpoints(dir_);
    // `latest` first when it names a file that exists.
    std::ifstream in(dir_ + "/latest");
    std::string latest;
    if (in >> latest && fs::exists(dir_ + "/" + latest)) {
      auto it = std::find(candidates.begin(), candidates.end(), dir_ + "/" + latest);
      if (it != candidates.end()) std::rotate(candidates.begin(), it, it + 1);
    }
    if (candidates.empty()) return start_fresh("no checkpoint to resume from");
  } else {
    if (!fs::exists(restart)) throw DeckError("run.restart = " + restart + ": no such checkpoint");
    candidates = {restart};
  }
  const ParamLayout& layout = t.layout();
  const int replicas = t.deck().dipaco.replica_mode == "diloco" ? t.topology().ranks_per_path : 1;
  // What this rank restores from a file written with `stored` replicas per path: its own
  // replica when the file has it, else replica 0 (another rank count: a warning says so).
  auto groups_for = [&](long stored) {
    std::vector<CheckpointGroup> groups;
    const int r = stored == replicas ? t.topology().rank_in_path(rank_) : 0;
    for (auto& ps : t.paths())
      groups.push_back({replica_path(ps.id, replicas > 1 ? r : 0), layout.total,
                        {{"params", ps.params.get()}, {"adam_m", ps.m.get()}, {"adam_v", ps.v.get()}}, true});
    for (auto& u : t.outer().units())
      if (u.mine)
        groups.push_back({unit_path(u), layout.groups[u.group].size, {{"anchor", u.anchor.get()}, {"momentum", u.momentum.get()}}});
    return groups;
  };

  // Every rank must accept the same checkpoint: true when all ranks got no error.
  auto agree = [&](const std::string& error) {
    int ok = error.empty();
    watched("agreeing on a checkpoint", [&] { MPI_Allreduce(MPI_IN_PLACE, &ok, 1, MPI_INT, MPI_MIN, world_); });
    return ok != 0;
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
    if (agree(error)) {
      Progress pr;
      try {
        pr = read_checkpoint(file, world_, t.deck(), t.topology().paths, groups, &t.kernels(), force);
      } catch (const CheckpointError& e) {
        error = e.what();
      }
      if (!agree(error))
        throw CheckpointError("checkpoint " + file + " changed while it was read: " + (error.empty() ? "on another rank" : error));
      for (auto& ps : t.paths()) ps.step = pr.step;
      t.progress() = pr;
      return file;
    }
    if (rank_ == 0)
      std::fprintf(stderr, "dipaco: warning: skipping checkpoint %s: %s\n", file.c_str(),
                   error.empty() ? "failed to verify on another rank" : error.c_str());
    if (restart != "auto")
      throw CheckpointError("cannot restart from " + file + ": " + (error.empty() ? "it failed to verify on another rank" : error));
  }
  if (rank_ == 0) std::fprintf(stderr, "dipaco: warning: no usable checkpoint in %s; starting fresh\n", dir_.c_str());
  return start_fresh("no usable checkpoint");
}

}  // namespace dipaco
