#include "dipaco/data/shards.hpp"

#include <hdf5.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <utility>
#include <map>
#include <sstream>

#include "dipaco/io/h5io.hpp"

namespace dipaco {

Assignment assign_by_rule(const DocList& docs, int paths, RouteMethod rule) {
  Assignment a(paths);
  std::map<std::string, int> domain_index;
  if (rule == RouteMethod::domain) {
    for (const Document& d : docs) domain_index.emplace(d.domain, 0);
    int i = 0;
    for (auto& [name, idx] : domain_index) idx = i++;
  }
  docs.each_block(4096, [&](size_t first, const std::vector<Document>& block) {
    for (size_t j = 0; j < block.size(); ++j) {
      const Document& d = block[j];
      int p = rule == RouteMethod::domain ? domain_index[std::string(d.domain)] % paths : int(hash64(read_view(d.id), 17) % uint64_t(paths));
      a[p].push_back(int(first + j));
    }
  });
  return a;
}

std::vector<Shard> shards_of(const DocList& docs, const Assignment& a) {
  std::vector<Shard> out;
  for (const auto& picks : a) out.push_back(docs.subset(picks));
  return out;
}

Assignment by_path(const std::vector<int>& path_of_doc, int paths) {
  Assignment a(paths);
  for (size_t i = 0; i < path_of_doc.size(); ++i) a[path_of_doc[i]].push_back(int(i));
  return a;
}

Assignment by_path(const std::vector<std::vector<int>>& paths_of_doc, int paths) {
  Assignment a(paths);
  for (size_t i = 0; i < paths_of_doc.size(); ++i)
    for (int p : paths_of_doc[i]) a[p].push_back(int(i));
  return a;
}

namespace {
// Rows a shard file is written and read in (a shard may hold most of the corpus).
constexpr size_t kBlock = 1 << 16;
}  // namespace

double shard_bytes(const Shard& shard) {
  double bytes = 0;
  for (size_t a = 0; a < shard.size(); a += kBlock)
    for (uint64_t t : shard.slice(a, std::min(shard.size(), a + kBlock)).tokens()) bytes += double(t + 1);
  return bytes;
}

void keep_held(ShardFile& s, const DocList& train, const std::vector<int>& held) {
  s.train_docs.clear(), s.train_bytes.clear();
  for (size_t p = 0; p < s.train.size(); ++p) {
    s.train_docs.push_back(long(s.train[p].size()));
    s.train_bytes.push_back(shard_bytes(train.subset(s.train[p])));
    if (!std::count(held.begin(), held.end(), int(p))) s.train[p] = {};
  }
}

namespace {

// Rows [at, at + n) of a 1-D dataset written kBlock at a time from
// `fill(first, count, buf)`, so that a path's arrays are never held whole.
template <class T, class Fill>
void write_rows(hid_t d, const char* name, hid_t type, size_t width, hsize_t at, hsize_t n, Fill fill) {
  std::vector<T> buf;
  for (hsize_t first = 0; first < n; first += kBlock) {
    hsize_t count = std::min<hsize_t>(kBlock, n - first), start = at + first;
    buf.assign(size_t(count) * width, T{});
    fill(size_t(first), size_t(count), buf.data());
    H5Id file_space(H5Dget_space(d), H5Sclose), mem(H5Screate_simple(1, &count, nullptr), H5Sclose);
    check(H5Sselect_hyperslab(file_space, H5S_SELECT_SET, &start, nullptr, &count, nullptr), "select a block");
    check(H5Dwrite(d, type, mem, file_space, H5P_DEFAULT, buf.data()), std::string("write dataset ") + name);
  }
}

H5Id create_rows(hid_t g, const char* name, hid_t type, hsize_t n) {
  H5Id sp(H5Screate_simple(1, &n, nullptr), H5Sclose);
  return H5Id(checked(H5Dcreate2(g, name, type, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), std::string("create dataset ") + name),
              H5Dclose);
}

// One path's datasets, created at their full length, filled a piece at a time.
struct PathRows {
  H5Id group, id_type, index, tokens, ids;
  size_t width = 1;
  hsize_t n = 0, at = 0;
};

void write_split(hid_t f, const char* group, const DocList& docs, const ShardPieces& pieces) {
  H5Id g(checked(H5Gcreate2(f, group, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), std::string("create group ") + group), H5Gclose);
  std::vector<PathRows> w(pieces.docs.size());
  for (size_t p = 0; p < w.size(); ++p) {
    const std::string name = "P" + std::to_string(p);
    w[p].group = H5Id(checked(H5Gcreate2(g, name.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), "create shard group"), H5Gclose);
    w[p].n = hsize_t(pieces.docs[p]);
    w[p].width = std::max<size_t>(1, pieces.id_width[p]);  // the ids are fixed-width strings: the longest one's
    w[p].id_type = H5Id(H5Tcopy(H5T_C_S1), H5Tclose);
    H5Tset_size(w[p].id_type, w[p].width);
    w[p].index = create_rows(w[p].group, "doc_index", H5T_NATIVE_LLONG, w[p].n);
    w[p].tokens = create_rows(w[p].group, "tokens", H5T_NATIVE_LLONG, w[p].n);
    w[p].ids = create_rows(w[p].group, "ids", w[p].id_type, w[p].n);
  }
  auto internal = [&](size_t p, const std::string& what) {
    return CheckpointError(std::string("internal: shard file ") + group + "/P" + std::to_string(p) + ": " + what);
  };
  while (const Assignment* a = pieces.next()) {
    for (size_t p = 0; p < a->size() && p < w.size(); ++p) {
      const std::vector<int>& picks = (*a)[p];
      PathRows& r = w[p];
      if (picks.empty()) continue;
      if (r.at + picks.size() > r.n) throw internal(p, "more documents than counted");
      const DocList shard = docs.subset(picks);
      write_rows<long long>(r.index, "doc_index", H5T_NATIVE_LLONG, 1, r.at, picks.size(), [&](size_t first, size_t count, long long* out) {
        for (size_t j = 0; j < count; ++j) out[j] = picks[first + j];
      });
      write_rows<long long>(r.tokens, "tokens", H5T_NATIVE_LLONG, 1, r.at, picks.size(), [&](size_t first, size_t count, long long* out) {
        const std::vector<uint64_t> t = shard.slice(first, first + count).tokens();
        for (size_t j = 0; j < count; ++j) out[j] = (long long)t[j] + 1;
      });
      write_rows<char>(r.ids, "ids", r.id_type, r.width, r.at, picks.size(), [&](size_t first, size_t count, char* out) {
        const std::vector<Document> block = shard.documents(first, first + count);
        for (size_t j = 0; j < count; ++j) {
          if (block[j].id.size() > r.width) throw internal(p, "an id longer than the counted width");
          read_text(block[j].id, 0, block[j].id.size(), out + j * r.width);
        }
      });
      r.at += picks.size();
    }
  }
  for (size_t p = 0; p < w.size(); ++p)
    if (w[p].at != w[p].n) throw internal(p, std::to_string(w[p].at) + " documents written of " + std::to_string(w[p].n));
}

// A whole assignment as one piece, its counts and id widths from its lists.
ShardPieces whole(const Assignment& a, const DocList& docs) {
  ShardPieces out;
  for (const auto& picks : a) {
    size_t width = 1;
    docs.subset(picks).each_block(kBlock, [&](size_t, const std::vector<Document>& block) {
      for (const Document& d : block) width = std::max(width, d.id.size());
    });
    out.docs.push_back(long(picks.size()));
    out.id_width.push_back(width);
  }
  out.next = [&a, given = false]() mutable -> const Assignment* { return std::exchange(given, true) ? nullptr : &a; };
  return out;
}

// One group's lists; with train_docs/train_bytes (the training group) every
// path's size is read too, and only `held` paths' lists (all when null).
Assignment read_split(hid_t f, const char* group, int paths, const DocList& docs, const std::string& file,
                      const std::vector<int>* held, std::vector<long>* train_docs, std::vector<double>* train_bytes) {
  Assignment a(paths);
  for (int p = 0; p < paths; ++p) {
    const std::string name = std::string("/") + group + "/P" + std::to_string(p);
    H5Id g = open_group(f, name);
    const hsize_t most = docs.size();
    if (!held || std::count(held->begin(), held->end(), p)) {
      read_number_blocks<long long>(g, "doc_index", H5T_NATIVE_LLONG, most, [&](size_t, const std::vector<long long>& b) {
        for (long long i : b) {
          if (i < 0 || size_t(i) >= docs.size())
            throw CheckpointError(file + ": " + name + "/doc_index: index " + std::to_string(i) + " outside the split's " +
                                  std::to_string(docs.size()) + " documents (was the corpus changed?)");
          a[p].push_back(int(i));
        }
      });
    }
    if (!train_docs) continue;
    double bytes = 0;
    const hsize_t n = read_number_blocks<long long>(g, "tokens", H5T_NATIVE_LLONG, most, [&](size_t, const std::vector<long long>& b) {
      for (long long t : b) {
        if (t < 1 || t > (1LL << 31) + 1)
          throw CheckpointError(file + ": " + name + "/tokens: a document of " + std::to_string(t) + " tokens + 1");
        bytes += double(t);
      }
    });
    if (held && !a[p].empty() && a[p].size() != n)
      throw CheckpointError(file + ": " + name + ": " + std::to_string(a[p].size()) + " documents but " + std::to_string(n) +
                            " token counts");
    train_docs->push_back(long(n));
    train_bytes->push_back(bytes);
  }
  return a;
}

}  // namespace

void write_shard_file(const std::string& path, const ShardFile& s, const Split& split, const ShardPieces* train) {
  write_h5_atomic(path, [&](hid_t f) {
    write_attr_string(f, "format", "dipaco-shards");
    write_attr_string(f, "stamp", s.stamp);
    write_attr_long(f, "paths", long(s.train.size()));
    write_attr_long(f, "round", s.round);
    if (s.has_router) {
      hid_t g = checked(H5Gcreate2(f, "router", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), "create group router");
      write_attr_string(g, "mode", s.router.mode);
      write_attr_long(g, "dim", s.router.dim);
      std::ostringstream mpl;
      for (size_t l = 0; l < s.router.modules_per_level.size(); ++l) mpl << (l ? "," : "") << s.router.modules_per_level[l];
      write_attr_string(g, "modules_per_level", mpl.str());
      for (size_t l = 0; l < s.router.centroids.size(); ++l) {
        const bool per_level = s.router.mode == "product" || s.router.mode == "residual";
        hsize_t k = per_level ? hsize_t(s.router.modules_per_level[l]) : hsize_t(s.router.paths());
        hsize_t dims[2] = {k, s.router.centroids[l].size() / k};
        write_dataset(g, "centroids_" + std::to_string(l), H5T_NATIVE_FLOAT, 2, dims, s.router.centroids[l].data());
      }
      H5Gclose(g);
    }
    write_split(f, "train", split.train, train ? *train : whole(s.train, split.train));
    write_split(f, "val", split.val, whole(s.val, split.val));
  });
}

std::string latest_shard_file(const std::string& run_dir) {
  std::string best;
  int best_round = -1;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(run_dir, ec)) {
    const std::string name = e.path().filename().string();
    int round = -1;
    if (name == "shards.h5") round = 0;
    else if (name.rfind("shards-r", 0) == 0 && name.size() > 11 && name.substr(name.size() - 3) == ".h5")
      round = std::atoi(name.c_str() + 8);
    if (round > best_round) best_round = round, best = e.path().string();
  }
  return best;
}

namespace {
// The /router group, checked against the file's path count.
Router read_router(hid_t g, long paths, const std::string& path) {
  Router r;
  r.mode = read_attr_string(g, "mode");
  r.dim = int(read_attr_scalar<long>(g, "dim", H5T_NATIVE_LONG));
  std::stringstream mpl(read_attr_string(g, "modules_per_level"));
  for (std::string x; std::getline(mpl, x, ',');) r.modules_per_level.push_back(std::atoi(x.c_str()));
  long prod = 1;  // not path_count(): crafted counts must not overflow or go negative
  for (int m : r.modules_per_level) prod *= std::max(m, 0);
  const bool known = r.mode == "flat" || r.mode == "product" || r.mode == "residual" || r.mode == "logistic";
  if (!known || r.dim < 1 || r.dim > 1 << 20 || r.modules_per_level.empty() || prod != paths)
    throw CheckpointError(path + ": /router attributes (mode, dim, modules_per_level) disagree with paths = " +
                          std::to_string(paths));
  const bool product = r.mode == "product", per_level = product || r.mode == "residual";
  const int levels = per_level ? int(r.modules_per_level.size()) : 1;
  for (int l = 0; l < levels; ++l) {
    // Product levels hold their slice of the features, residual levels all of them.
    const int width = product ? r.dim * (l + 1) / levels - r.dim * l / levels : r.dim + (r.mode == "logistic");
    const hsize_t k = per_level ? hsize_t(r.modules_per_level[l]) : hsize_t(paths);
    const std::string name = "centroids_" + std::to_string(l);
    r.centroids.push_back(read_numbers<float>(g, name, H5T_NATIVE_FLOAT, k, hsize_t(width)));
    if (r.centroids.back().size() != k * width)
      throw CheckpointError(path + ": /router/" + name + " holds " + std::to_string(r.centroids.back().size() / width) +
                            " centroids, expected " + std::to_string(k));
  }
  return r;
}
}  // namespace

ShardFile read_shard_file(const std::string& path, const Split& split, const std::vector<int>* held) {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  H5Id f(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  if (!f.ok()) throw CheckpointError("cannot open shard file " + path);
  ShardFile s;
  if (read_attr_string(f, "format") != "dipaco-shards") throw CheckpointError(path + " is not a dipaco shard file");
  s.stamp = read_attr_string(f, "stamp");
  const long paths = read_attr_scalar<long>(f, "paths", H5T_NATIVE_LONG);
  s.round = int(read_attr_scalar<long>(f, "round", H5T_NATIVE_LONG));
  if (paths < 1 || paths > 1 << 20) throw CheckpointError(path + ": attribute paths = " + std::to_string(paths) + " is impossible");
  if (H5Lexists(f, "router", H5P_DEFAULT) > 0) {
    s.has_router = true;
    s.router = read_router(open_group(f, "router"), paths, path);
  }
  s.train = read_split(f, "train", int(paths), split.train, path, held, &s.train_docs, &s.train_bytes);
  s.val = read_split(f, "val", int(paths), split.val, path, nullptr, nullptr, nullptr);
  return s;
}

}  // namespace dipaco
