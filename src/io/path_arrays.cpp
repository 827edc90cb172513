#include "dipaco/io/path_arrays.hpp"

#include <sstream>

#include "dipaco/io/parse_number.hpp"

namespace dipaco {

size_t parse_count(const std::string& s, const std::string& what) {
  const auto v = parse_integer(s, 0, 1LL << 40);
  if (!v) throw CheckpointError(what + ": '" + s.substr(0, 40) + "' is not a count");
  return size_t(*v);
}

std::vector<std::pair<std::string, GroupSpan>> parse_arena_groups(const std::string& text, const std::string& what) {
  std::vector<std::pair<std::string, GroupSpan>> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    const auto a = line.find(':'), b = line.rfind(':');
    if (a == std::string::npos || a == b) throw CheckpointError(what + ": expected name:offset:size, got '" + line.substr(0, 40) + "'");
    out.push_back({line.substr(0, a), {parse_count(line.substr(a + 1, b - a - 1), what), parse_count(line.substr(b + 1), what)}});
  }
  if (out.empty()) throw CheckpointError(what + " lists no group");
  return out;
}

void check_checkpoint_format(hid_t f, const std::string& file) {
  const long version = read_attr_scalar<long>(f, "format_version", H5T_NATIVE_LONG);
  if (version == kCheckpointFormat) return;
  std::string hint = version < kCheckpointFormat
                         ? " (an older dipaco wrote it: its git_commit attribute names the build that reads it; "
                           "start this run fresh with --run.restart=never)"
                         : " (a newer dipaco wrote it)";
  throw CheckpointError(file + ": checkpoint format version " + std::to_string(version) + ", this build reads version " +
                        std::to_string(kCheckpointFormat) + hint);
}

namespace {

// An attribute of exactly n numbers, read as `type`.
template <typename T>
std::vector<T> read_attr_numbers(hid_t obj, const char* name, hid_t type, size_t n) {
  H5Id a(H5Aexists(obj, name) > 0 ? H5Aopen(obj, name, H5P_DEFAULT) : -1, H5Aclose);
  if (!a.ok()) throw CheckpointError(h5_attr_where(obj, name) + " is missing");
  H5Id t(H5Aget_type(a), H5Tclose), sp(H5Aget_space(a), H5Sclose);
  const H5T_class_t cls = t.ok() ? H5Tget_class(t) : H5T_NO_CLASS;
  if (cls != H5T_INTEGER && cls != H5T_FLOAT) throw CheckpointError(h5_attr_where(obj, name) + " should hold numbers");
  const hssize_t have = sp.ok() ? H5Sget_simple_extent_npoints(sp) : -1;
  if (have != hssize_t(n))
    throw CheckpointError(h5_attr_where(obj, name) + " holds " + std::to_string(have) + " values, expected " + std::to_string(n));
  std::vector<T> v(n);
  if (n) check(H5Aread(a, type, v.data()), "read " + h5_attr_where(obj, name));
  return v;
}

}  // namespace

PathArrays::PathArrays(hid_t f, const std::string& file, long paths, size_t want_total) : f_(f), file_(file), paths_(paths) {
  H5Id pg = open_group(f, "/paths");
  arena_ = parse_arena_groups(read_attr_string(pg, "arena_groups"), file + ": attribute arena_groups of /paths");
  for (const auto& [name, span] : arena_) total_ = std::max(total_, span.offset + span.size);
  // The moments store every path's whole arena: a larger claim than the file is impossible.
  if (double(total_) * 4 * double(paths) > double(h5_file_size(f)))
    throw CheckpointError(file + ": attribute arena_groups of /paths claims " + std::to_string(paths) + " path(s) of " +
                          std::to_string(total_) + " values, more than the file holds");
  if (want_total && total_ != want_total)
    throw CheckpointError(file + ": attribute arena_groups of /paths describes " + std::to_string(total_) +
                          " values a path, the deck needs " + std::to_string(want_total));
  replicas_ = read_attr_long(pg, "replicas", 1, 1L << 20);
  steps_ = read_attr_numbers<long>(pg, "steps", H5T_NATIVE_LONG, size_t(paths));
  shard_ = read_attr_numbers<double>(pg, "shard_tokens", H5T_NATIVE_DOUBLE, size_t(paths));
  H5Id topo = open_group(f, "/topology");
  levels_ = int(read_attr_long(topo, "levels", 1, 64));
  private_ = read_attr_numbers<long>(topo, "private_levels", H5T_NATIVE_LONG, size_t(levels_));
  table_ = read_numbers<long>(topo, "path_table", H5T_NATIVE_LONG, hsize_t(paths), hsize_t(levels_));
  if (table_.size() != size_t(paths) * levels_)
    throw CheckpointError(file + ": dataset /topology/path_table has another number of rows than the " + std::to_string(paths) +
                          " paths");
  shared_embeddings_ = H5Lexists(f, "/modules", H5P_DEFAULT) > 0 && H5Lexists(f, "/modules/embeddings", H5P_DEFAULT) > 0;
  std::map<std::string, int> index;
  for (size_t g = 0; g < arena_.size(); ++g) index[arena_[g].first] = int(g);
  for (const auto& kind : path_array_kinds()) {
    const std::string where = file + ": dataset /paths/" + kind;
    const bool exists = H5Lexists(pg, kind.c_str(), H5P_DEFAULT) > 0;
    if (!exists && kind == "outer_error") continue;  // a run without error feedback
    H5Id d(exists ? H5Dopen2(pg, kind.c_str(), H5P_DEFAULT) : -1);
    if (!d.ok()) throw CheckpointError(where + " is missing");
    H5Id type(H5Dget_type(d), H5Tclose), space(H5Dget_space(d), H5Sclose);
    const H5T_class_t cls = type.ok() ? H5Tget_class(type) : H5T_NO_CLASS;
    if (cls != H5T_FLOAT && cls != H5T_INTEGER) throw CheckpointError(where + " does not hold numbers");
    hsize_t dims[H5S_MAX_RANK] = {};
    const int nd = space.ok() ? H5Sget_simple_extent_ndims(space) : -1;
    if (nd < 0 || nd > H5S_MAX_RANK || H5Sget_simple_extent_dims(space, dims, nullptr) != nd)
      throw CheckpointError(where + " has an unreadable shape");
    double values = 1;  // in double: crafted dimensions can overflow 64 bits
    std::string shape;
    for (int i = 0; i < nd; ++i) values *= double(dims[i]), shape += (i ? " x " : "") + std::to_string(dims[i]);
    if (values * 4 > double(h5_file_size(f)))
      throw CheckpointError(where + " claims [" + shape + "] values, more than the file holds");
    Kind k;
    std::istringstream names(read_attr_string(d, "groups"));
    size_t cols = 0;
    for (std::string n; std::getline(names, n);) {
      auto it = index.find(n);
      if (it == index.end()) throw CheckpointError(h5_attr_where(d, "groups") + " names '" + n.substr(0, 40) + "', not an arena group");
      if (!k.stored.empty() && it->second <= k.stored.back())
        throw CheckpointError(h5_attr_where(d, "groups") + " is not in arena order");
      k.stored.push_back(it->second);
      k.column.push_back(cols);
      cols += arena_[it->second].second.size;
    }
    if (kind != "params" && k.stored.size() != arena_.size())
      throw CheckpointError(h5_attr_where(d, "groups") + " must list every arena group");
    if (nd != 3 || dims[0] != hsize_t(paths) || dims[1] != hsize_t(replicas_) || dims[2] != cols)
      throw CheckpointError(where + " has shape [" + shape + "], expected [" + std::to_string(paths) + " x " +
                            std::to_string(replicas_) + " x " + std::to_string(cols) + "] (paths x replicas x its groups' values)");
    k.sums = read_attr_numbers<uint64_t>(d, "checksums", H5T_NATIVE_UINT64, size_t(paths) * replicas_ * k.stored.size());
    kinds_[kind] = std::move(k);
  }
}

std::string PathArrays::anchor_of(const std::string& group, long p) const {
  if (group == "embeddings")
    return shared_embeddings_ ? "/modules/embeddings" : "/modules/path_embeddings/P" + std::to_string(p);
  const int l = group.size() > 1 && group[0] == 'L' ? std::atoi(group.c_str() + 1) : -1;
  if (l < 0 || l >= levels_) throw CheckpointError(file_ + ": arena group '" + group + "' is neither embeddings nor a level");
  return "/modules/L" + std::to_string(l) + (private_[l] ? "/P" + std::to_string(p) : "/M" + std::to_string(module(p, l)));
}

void PathArrays::read(const std::string& kind, long p, long r, float* arena) const {
  const std::string where = file_ + ": dataset /paths/" + kind;
  if (!has(kind))
    throw CheckpointError(where + " is missing (the run that wrote it kept no outer-gradient residuals: "
                          "dipaco.outer_dtype = fp32 or dipaco.error_feedback = off)");
  const Kind& k = kinds_.at(kind);
  if (p < 0 || p >= paths_ || r < 0 || r >= replicas_)
    throw CheckpointError(where + " has no row for path " + std::to_string(p) + ", replica " + std::to_string(r));
  H5Id d(H5Dopen2(f_, ("/paths/" + kind).c_str(), H5P_DEFAULT));
  H5Id fs(H5Dget_space(d), H5Sclose);
  std::vector<bool> have(arena_.size(), false);
  for (size_t i = 0; i < k.stored.size(); ++i) {
    const int g = k.stored[i];
    const GroupSpan span = arena_[g].second;
    have[g] = true;
    if (!span.size) continue;
    const hsize_t start[3] = {hsize_t(p), hsize_t(r), k.column[i]}, count[3] = {1, 1, span.size};
    H5Id ms(H5Screate_simple(1, &count[2], nullptr), H5Sclose);
    check(H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, nullptr, count, nullptr), "select " + where);
    if (H5Dread(d, H5T_NATIVE_FLOAT, ms, fs, H5P_DEFAULT, arena + span.offset) < 0)
      throw CheckpointError(where + " cannot be read (truncated file?)");
    const uint64_t want = k.sums[(size_t(p) * replicas_ + r) * k.stored.size() + i];
    if (checksum(arena + span.offset, span.size * sizeof(float)) != want)
      throw CheckpointError(where + ": checksum mismatch in group " + arena_[g].first + " of path " + std::to_string(p) +
                            (replicas_ > 1 ? ", replica " + std::to_string(r) : ""));
  }
  for (size_t g = 0; g < arena_.size(); ++g) {
    if (have[g]) continue;
    // Paths that share a module read its anchor once (verified then).
    const std::string unit = anchor_of(arena_[g].first, p);
    auto it = anchors_.find(unit);
    if (it == anchors_.end()) {
      std::vector<float> a(arena_[g].second.size);
      read_floats(open_group(f_, unit), "anchor", a.size(), a.data(), file_);
      it = anchors_.emplace(unit, std::move(a)).first;
    }
    std::copy(it->second.begin(), it->second.end(), arena + arena_[g].second.offset);
  }
}

}  // namespace dipaco
