#include "dipaco/data/segment_shards.hpp"

#include <algorithm>
#include <functional>

#include "dipaco/data/routed_eval.hpp"
#include "dipaco/dist/watchdog.hpp"
#include "dipaco/io/h5io.hpp"
#include "dipaco/io/log.hpp"
#include "dipaco/io/stamp.hpp"
#include "dipaco/train/metrics.hpp"

namespace dipaco {

namespace {

// A window on its way to a rank of its path; doc indexes the split's training documents.
struct Placement {
  uint32_t path, doc, start;
};

MPI_Datatype placement_type() {
  static const MPI_Datatype type = [] {
    MPI_Datatype t;
    MPI_Type_contiguous(3, MPI_UINT32_T, &t);
    MPI_Type_commit(&t);
    return t;
  }();
  return type;
}

// A document's segments over its whole stream; one shorter than the prefix is one segment.
std::vector<Segment> training_segments(const Document& d, size_t prefix, size_t every) {
  std::vector<Segment> s = cut_segments(d.tokens() + 1, prefix, every);
  if (s.empty()) s.push_back({0, d.tokens() + 1});
  return s;
}

// Sends to[q] to rank q; returns what every rank sent here, in rank order.
std::vector<Placement> exchange(const std::vector<std::vector<Placement>>& to, MPI_Comm world, const char* what) {
  const size_t R = to.size();
  std::vector<int> send(R), recv(R), sdispl(R + 1, 0), rdispl(R + 1, 0);
  std::vector<Placement> flat;
  for (size_t q = 0; q < R; ++q) {
    send[q] = int(to[q].size());
    flat.insert(flat.end(), to[q].begin(), to[q].end());
    sdispl[q + 1] = sdispl[q] + send[q];
  }
  watched(what, [&] { MPI_Alltoall(send.data(), 1, MPI_INT, recv.data(), 1, MPI_INT, world); });
  for (size_t q = 0; q < R; ++q) rdispl[q + 1] = rdispl[q] + recv[q];
  std::vector<Placement> got(static_cast<size_t>(rdispl[R]));
  watched(what, [&] {
    MPI_Alltoallv(flat.data(), send.data(), sdispl.data(), placement_type(), got.data(), recv.data(), rdispl.data(),
                  placement_type(), world);
  });
  return got;
}

// The rank whose block of the n training documents holds document i (rank r: [n r / R, n (r + 1) / R)).
size_t block_rank(size_t i, size_t n, size_t R) {
  size_t r = std::min(R - 1, i * R / std::max<size_t>(n, 1));
  while (r + 1 < R && n * (r + 1) / R <= i) ++r;
  while (r > 0 && n * r / R > i) --r;
  return r;
}

// The own path of each training document of this rank's block [lo, hi)
// (route.overlap = 1): each path's first rank tells the documents' ranks.
std::vector<int> block_paths(const Assignment& train, const Topology& topo, int rank, size_t n, size_t lo, size_t hi,
                             MPI_Comm world) {
  int size;
  MPI_Comm_size(world, &size);
  const size_t ranks = size_t(size);
  std::vector<std::vector<Placement>> to(ranks);
  if (topo.rank_in_path(rank) == 0)
    for (int p : topo.paths_of_rank(rank))
      if (size_t(p) < train.size())
        for (int i : train[size_t(p)]) to[block_rank(size_t(i), n, ranks)].push_back({uint32_t(p), uint32_t(i), 0});
  std::vector<int> own(hi - lo, -1);
  for (const Placement& pl : exchange(to, world, "the documents' own paths")) own[pl.doc - lo] = int(pl.path);
  return own;
}

// Tokens a segment stands for: the first with the tokens before it, so that a document's segments add up to it.
double segment_tokens(const Segment& s, size_t prefix) { return double(s.to - (s.from <= prefix ? 0 : s.from)); }

}  // namespace

size_t segment_window(const Deck& deck) {
  return size_t(deck.route.segment_window > 0 ? deck.route.segment_window : deck.route.prefix_tokens);
}

SegmentShards segment_shards(const Assignment& train, const DocList& docs, const Router& router, const Topology& topo,
                             int rank, FeatureModel& features, const Deck& deck, MPI_Comm world) {
  int size;
  MPI_Comm_size(world, &size);
  const size_t R = size_t(size);
  const int P = topo.paths, T = deck.model.context, dim = features.dim();
  const size_t prefix = size_t(deck.route.prefix_tokens), every = size_t(deck.route.segment_tokens);
  const size_t window = segment_window(deck);
  const std::vector<int> held = topo.paths_of_rank(rank);
  std::vector<int> slot(size_t(P), -1);
  for (size_t i = 0; i < held.size(); ++i) slot[size_t(held[i])] = int(i);
  std::vector<std::vector<WindowStart>> mine(held.size());  // doc: index into docs, until the end
  SegmentShards out;
  out.bytes.assign(size_t(P), 0.0);
  long counts[3] = {0, 0, 0};  // segments, re-routed, re-routed that stayed on their document's path

  // The segments before the first re-routed one keep the document's path: every
  // rank of the path reads them from its own shard; its first counts them.
  const bool counts_held = topo.rank_in_path(rank) == 0;
  for (size_t i = 0; i < held.size(); ++i) {
    const size_t p = size_t(held[i]);
    if (p >= train.size()) continue;
    docs.subset(train[p]).each_block(4096, [&](size_t first, const std::vector<Document>& block) {
      for (size_t j = 0; j < block.size(); ++j)
        for (const Segment& s : training_segments(block[j], prefix, every)) {
          if (rerouted(s.from, prefix, window)) break;
          mine[i].push_back({uint32_t(train[p][first + j]), segment_window_start(s.to, T)});
          if (counts_held) out.bytes[p] += segment_tokens(s, prefix), ++counts[0];
        }
    });
  }

  // The re-routed ones: a round of each rank's block of documents at a time (the
  // same number of rounds on every rank), routed here and sent to their path's ranks.
  const size_t n = docs.size(), lo = n * size_t(rank) / size_t(size), hi = n * size_t(rank + 1) / size_t(size);
  const std::vector<int> own = deck.route.segment_margin > 0 ? block_paths(train, topo, rank, n, lo, hi, world)
                                                              : std::vector<int>();
  const size_t per_round = 256, rounds = ((n + size_t(size) - 1) / size_t(size) + per_round - 1) / per_round;
  const double t0 = MPI_Wtime();
  double said = t0;
  for (size_t k = 0; k < rounds; ++k) {
    const size_t a = std::min(hi, lo + k * per_round), b = std::min(hi, a + per_round);
    const std::vector<Document> block = docs.documents(a, b);
    std::vector<FeatureWindow> windows;
    std::vector<Placement> found;  // in the order of windows; the path once routed
    std::vector<double> tokens;
    std::vector<int> owner;  // the own path of each window's document (-1: none)
    for (size_t j = 0; j < block.size(); ++j)
      for (const Segment& s : training_segments(block[j], prefix, every))
        if (rerouted(s.from, prefix, window)) {
          windows.push_back({&block[j], s.from - window});
          owner.push_back(own.empty() ? -1 : own[a + j - lo]);
          found.push_back({0, uint32_t(a + j), segment_window_start(s.to, T)});
          tokens.push_back(segment_tokens(s, prefix));
        }
    const std::vector<float> f = features.local_features(windows);
    std::vector<std::vector<Placement>> to(R);
    for (size_t w = 0; w < found.size(); ++w) {
      found[w].path = uint32_t(router.rerouted_path(&f[w * size_t(dim)], owner[w]));
      counts[2] += int(found[w].path) == owner[w];
      out.bytes[found[w].path] += tokens[w];
      for (int q : topo.ranks_of_path(int(found[w].path))) to[size_t(q)].push_back(found[w]);
    }
    counts[0] += long(found.size()), counts[1] += long(found.size());
    const std::vector<Placement> got = exchange(to, world, "the segment shards' windows");
    for (const Placement& pl : got) {
      const int i = slot[pl.path];
      if (i < 0) throw std::runtime_error("internal: a segment's window reached a rank that does not hold its path");
      mine[size_t(i)].push_back({pl.doc, pl.start});
    }
    if (const double now = MPI_Wtime(); now - said > 30 && k + 1 < rounds) {
      said = now;
      const double rate = double(b - lo) / (now - t0);
      say("segment shards: %zu of %zu documents on rank %d, %.0f documents/s, ETA %s\n", b - lo, hi - lo, rank, rate,
          format_duration(double(hi - b) / std::max(rate, 1e-9)).c_str());
    }
  }
  watched("the segment shards' sizes", [&] {
    MPI_Allreduce(MPI_IN_PLACE, out.bytes.data(), P, MPI_DOUBLE, MPI_SUM, world);
    MPI_Allreduce(MPI_IN_PLACE, counts, 3, MPI_LONG, MPI_SUM, world);
  });
  out.segments = counts[0], out.rerouted = counts[1];
  if (deck.route.segment_margin > 0)
    say("segment shards: %ld of %ld re-routed segments (%.1f%%) stay on their document's path (route.segment_margin = %g)\n",
        counts[2], counts[1], 100.0 * double(counts[2]) / double(std::max(counts[1], 1L)), deck.route.segment_margin);

  // Each held path's windows in document order: the same at any rank count.
  for (std::vector<WindowStart>& w : mine) {
    std::sort(w.begin(), w.end());
    w.erase(std::unique(w.begin(), w.end()), w.end());
    w.shrink_to_fit();
  }
  out.held = std::move(mine);
  return out;
}

TokenStream segment_stream(const std::vector<WindowStart>& windows, const DocList& docs) {
  std::vector<int> picks;
  std::vector<WindowStart> local(windows);
  for (WindowStart& x : local) {
    if (picks.empty() || picks.back() != int(x.doc)) picks.push_back(int(x.doc));
    x.doc = uint32_t(picks.size() - 1);
  }
  return TokenStream(docs.subset(picks), std::move(local));
}

void write_windows_router(hid_t g, const Router& r) {
  hsize_t dims[2] = {hsize_t(r.paths()), hsize_t(r.dim)};
  write_dataset(g, "centroids", H5T_NATIVE_FLOAT, 2, dims, r.centroids.at(0).data());
  write_dataset(g, "offsets", H5T_NATIVE_DOUBLE, 1, dims, r.offsets.data());
  dims[0] = 1;
  write_dataset(g, "stay", H5T_NATIVE_DOUBLE, 1, dims, &r.stay);
}

Router read_windows_router(hid_t g, int paths, const std::string& where) {
  Router r;
  r.mode = "flat", r.modules_per_level = {paths};
  H5Id d(H5Lexists(g, "centroids", H5P_DEFAULT) > 0 ? H5Dopen2(g, "centroids", H5P_DEFAULT) : -1, H5Dclose);
  if (!d.ok()) throw CheckpointError(where + "/centroids is missing");
  H5Id space(H5Dget_space(d), H5Sclose);
  hsize_t dims[2] = {0, 0};
  if (H5Sget_simple_extent_ndims(space) != 2 || H5Sget_simple_extent_dims(space, dims, nullptr) != 2 || dims[0] != hsize_t(paths))
    throw CheckpointError(where + "/centroids is not [" + std::to_string(paths) + ", dim]");
  r.dim = int(dims[1]);
  r.centroids = {read_numbers<float>(g, "centroids", H5T_NATIVE_FLOAT, hsize_t(paths), dims[1])};
  r.offsets = read_numbers<double>(g, "offsets", H5T_NATIVE_DOUBLE, hsize_t(paths));
  if (r.offsets.size() != size_t(paths)) throw CheckpointError(where + "/offsets is not [" + std::to_string(paths) + "]");
  if (H5Lexists(g, "stay", H5P_DEFAULT) > 0) {  // (a router written before the margin existed: 0)
    const std::vector<double> stay = read_numbers<double>(g, "stay", H5T_NATIVE_DOUBLE, 1);
    if (stay.size() != 1 || !(stay[0] >= 0)) throw CheckpointError(where + "/stay is not one number >= 0");
    r.stay = stay[0];
  }
  return r;
}

namespace {
constexpr const char* kSegmentsFormat = "dipaco-segments";

// The windows router of an open segments file.
Router read_router(hid_t f, int paths, const std::string& file) {
  return read_windows_router(open_group(f, "router"), paths, file + ":/router");
}
}  // namespace

std::string save_segment_shards(const std::string& file, const std::string& stamp, const SegmentShards& s,
                                const Topology& topo, int rank, MPI_Comm world) {
  const int P = topo.paths;
  const std::vector<int> held = topo.paths_of_rank(rank);
  // Every path's window count, from its first rank.
  std::vector<long> n(size_t(P), 0);
  for (size_t i = 0; i < held.size(); ++i)
    if (topo.rank_in_path(rank) == 0) n[size_t(held[i])] = long(s.held[i].size());
  watched("the segment shards' counts", [&] { MPI_Allreduce(MPI_IN_PLACE, n.data(), P, MPI_LONG, MPI_SUM, world); });
  for (long x : n)
    if (x > (long(1) << 30)) return "a path of over 2^30 windows";  // (the same answer on every rank)
  if (rank != 0) {
    for (size_t i = 0; i < held.size(); ++i)
      if (topo.rank_in_path(rank) == 0)
        MPI_Send(s.held[i].data(), int(2 * s.held[i].size()), MPI_UINT32_T, 0, held[i], world);
    return "";
  }
  std::string failed;
  try {
    write_h5_atomic(file, [&](hid_t f) {
      write_attr_string(f, "format", kSegmentsFormat);
      write_attr_string(f, "stamp", stamp);
      hsize_t dims[2] = {hsize_t(P), 2};
      write_dataset(f, "bytes", H5T_NATIVE_DOUBLE, 1, dims, s.bytes.data());
      const long counts[2] = {s.segments, s.rerouted};
      dims[0] = 2;
      write_dataset(f, "counts", H5T_NATIVE_LONG, 1, dims, counts);
      H5Id g(checked(H5Gcreate2(f, "router", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), "create group router"), H5Gclose);
      write_windows_router(g, s.router);
      dims[1] = 2;
      // Every path's windows are received, also after a write failed, so that no sender waits.
      std::vector<WindowStart> w;
      for (int p = 0; p < P; ++p) {
        const int from = topo.ranks_of_path(p)[0];
        if (from == 0) w = s.held[size_t(std::find(held.begin(), held.end(), p) - held.begin())];
        else {
          w.resize(size_t(n[size_t(p)]));
          MPI_Recv(w.data(), int(2 * w.size()), MPI_UINT32_T, from, p, world, MPI_STATUS_IGNORE);
        }
        if (!failed.empty()) continue;
        try {
          dims[0] = w.size();
          write_dataset(f, "P" + std::to_string(p), H5T_NATIVE_UINT32, 2, dims, w.data());
        } catch (const std::exception& e) {
          failed = e.what();
        }
      }
      if (!failed.empty()) throw CheckpointError(failed);
    });
  } catch (const std::exception& e) {
    failed = e.what();
  }
  return failed;
}

namespace {
// Collective: runs `read` on the segments file when it has this stamp; true on
// every rank when it did on every rank (a missing, damaged or other file: false).
bool read_stamped(const std::string& file, const std::string& stamp, MPI_Comm world, const char* what,
                  const std::function<void(hid_t)>& read) {
  int ok = 0;
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);  // a missing or damaged file is made again, not reported
  try {
    H5Id f(H5Fopen(file.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
    if (f.ok() && read_attr_string(f, "format") == kSegmentsFormat && same_stamp(read_attr_string(f, "stamp"), stamp))
      read(f), ok = 1;
  } catch (const std::exception&) {
    ok = 0;
  }
  watched(what, [&] { MPI_Allreduce(MPI_IN_PLACE, &ok, 1, MPI_INT, MPI_MIN, world); });
  return ok == 1;
}
}  // namespace

bool load_segment_shards(const std::string& file, const std::string& stamp, size_t docs, const Topology& topo, int rank,
                         MPI_Comm world, SegmentShards& out) {
  const int P = topo.paths;
  SegmentShards got;
  const bool ok = read_stamped(file, stamp, world, "agreeing on the segment shards' file", [&](hid_t f) {
    got.bytes = read_numbers<double>(f, "bytes", H5T_NATIVE_DOUBLE, hsize_t(P));
    const std::vector<long> counts = read_numbers<long>(f, "counts", H5T_NATIVE_LONG, 2);
    if (got.bytes.size() != size_t(P) || counts.size() != 2) throw CheckpointError(file + ": bytes or counts cut short");
    got.segments = counts[0], got.rerouted = counts[1];
    got.router = read_router(f, P, file);
    for (int p : topo.paths_of_rank(rank)) {
      std::vector<uint32_t> v = read_numbers<uint32_t>(f, "P" + std::to_string(p), H5T_NATIVE_UINT32, hsize_t(1) << 30, 2);
      std::vector<WindowStart>& w = got.held.emplace_back(v.size() / 2);
      for (size_t i = 0; i < w.size(); ++i) {
        w[i] = {v[2 * i], v[2 * i + 1]};
        if (w[i].doc >= docs || (i > 0 && !(w[i - 1] < w[i])))
          throw CheckpointError(file + ": path " + std::to_string(p) + "'s windows are not of these documents");
      }
    }
  });
  if (ok) out = std::move(got);
  return ok;
}

bool read_segment_router(const std::string& file, const std::string& stamp, int paths, MPI_Comm world, Router& out) {
  Router got;
  const bool ok = read_stamped(file, stamp, world, "agreeing on the segments' router",
                               [&](hid_t f) { got = read_router(f, paths, file); });
  if (ok) out = std::move(got);
  return ok;
}

Router read_segment_router(const std::string& file, int paths) {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  H5Id f(H5Fopen(file.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  if (!f.ok() || read_attr_string(f, "format") != kSegmentsFormat) throw CheckpointError(file + " is not a segments file");
  return read_router(f, paths, file);
}

}  // namespace dipaco
