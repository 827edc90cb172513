// `dipaco inspect CKPT.h5 [--json] [--layout]`: what a checkpoint holds —
// deck, topology, round and step, per-module anchor norms and how far each
// path's local copy has drifted from its anchor, per-path step and shard size.
// Reads with the serial HDF5 driver: no MPI job needed.
#include <hdf5.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <sstream>

#include "dipaco/cmd/app.hpp"
#include "dipaco/io/checkpoint.hpp"
#include "dipaco/io/deck.hpp"
#include "dipaco/train/metrics.hpp"
#include "dipaco/io/h5io.hpp"

namespace dipaco {
namespace {

const std::string kCheckpointFiles = "<run dir>/checkpoints/ckpt-*.h5";

struct GroupSpan {
  size_t offset, size;
};

double norm(const std::vector<float>& v, size_t off, size_t n) {
  double s = 0;
  for (size_t i = off; i < off + n; ++i) s += double(v[i]) * v[i];
  return std::sqrt(s);
}

herr_t list_object(hid_t obj, const char* name, const H5O_info_t* info, void* out) {
  auto& o = *static_cast<std::ostringstream*>(out);
  if (std::string(name) == ".") return 0;
  if (info->type == H5O_TYPE_GROUP) {
    o << "  /" << name << "/\n";
  } else if (info->type == H5O_TYPE_DATASET) {
    H5Id d(H5Dopen2(obj, name, H5P_DEFAULT));
    H5Id sp(d.ok() ? H5Dget_space(d) : -1, H5Sclose);
    hsize_t dims[H5S_MAX_RANK] = {};
    int nd = sp.ok() ? H5Sget_simple_extent_dims(sp, dims, nullptr) : -1;
    o << "  /" << name << "  [";
    for (int i = 0; i < nd; ++i) o << (i ? " x " : "") << dims[i];
    o << (nd < 0 ? "unreadable" : "") << "]\n";
  }
  return 0;
}

// A count or offset from a text attribute; `what` names the field in errors.
size_t parse_count(const std::string& s, const std::string& what) {
  size_t pos = 0;
  unsigned long long v = 0;
  try {
    v = std::stoull(s, &pos);
  } catch (const std::exception&) {
    pos = 0;
  }
  if (s.empty() || pos != s.size() || s[0] == '-' || v > (1ULL << 40))
    throw CheckpointError(what + ": '" + s.substr(0, 40) + "' is not a count");
  return size_t(v);
}

}  // namespace

int cmd_inspect(const Args& args) {
  std::string file;
  bool json = false, layout = false;
  for (const auto& a : args) {
    if (a == "--json") json = true;
    else if (a == "--layout") layout = true;
    else if (a.rfind("--", 0) == 0) throw DeckError("unknown option '" + a + "' (inspect takes --json, --layout)");
    else file = a;
  }
  if (file.empty()) throw DeckError("usage: dipaco inspect CKPT.h5 [--json] [--layout]");
  std::error_code ec;
  if (!std::filesystem::exists(file, ec)) throw DeckError("cannot open checkpoint '" + file + "': no such file");
  if (std::filesystem::is_directory(file, ec))
    throw DeckError("cannot open checkpoint '" + file + "': it is a directory (checkpoints are " + kCheckpointFiles + ")");
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  H5Id f(H5Fopen(file.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  if (!f.ok()) throw DeckError("cannot open checkpoint '" + file + "' (not an HDF5 file, or truncated)");
  // The other HDF5 files dipaco writes carry a "format" attribute (a checkpoint
  // has "format_version" instead): name them rather than a missing attribute.
  if (H5Aexists(f, "format") > 0) {
    const std::string format = read_attr_string(f, "format");
    const std::string what = format == "dipaco-shards" ? "a dipaco shard file"
                             : format == "dipaco-model" ? "an exported path model"
                                                        : "a '" + format.substr(0, 40) + "' file";
    throw DeckError(file + " is " + what + ", not a checkpoint; inspect reads training checkpoints (" + kCheckpointFiles + ")");
  }
  if (layout) {
    std::ostringstream o;
    if (H5Ovisit(f, H5_INDEX_NAME, H5_ITER_INC, list_object, &o) < 0) throw CheckpointError(file + ": cannot list its objects");
    std::printf("checkpoint layout of %s (every float dataset has a 'checksum' attribute):\n%s", file.c_str(), o.str().c_str());
    return kExitOk;
  }
  long step = read_attr_scalar<long>(f, "inner_step", H5T_NATIVE_LONG);
  long round = read_attr_scalar<long>(f, "outer_round", H5T_NATIVE_LONG);
  long world = read_attr_scalar<long>(f, "world_size", H5T_NATIVE_LONG);
  double wall = read_attr_scalar<double>(f, "wall_time", H5T_NATIVE_DOUBLE);
  std::string deck = read_attr_string(f, "deck"), version = read_attr_string(f, "dipaco_version"),
              commit = read_attr_string(f, "git_commit");
  long paths, levels;
  {
    H5Id topo = open_group(f, "/topology");
    paths = read_attr_long(topo, "paths", 1, 1 << 20);
    levels = read_attr_long(topo, "levels", 1, 64);
  }

  // The arena's groups: "name:offset:size" per line.
  H5Id pg = open_group(f, "/paths");
  const std::string arena_field = file + ": attribute arena_groups of /paths";
  std::map<std::string, GroupSpan> spans;
  size_t total = 0;
  std::istringstream arena(read_attr_string(pg, "arena_groups"));
  std::string line;
  while (std::getline(arena, line)) {
    auto a = line.find(':'), b = line.rfind(':');
    if (a == std::string::npos || a == b) throw CheckpointError(arena_field + ": expected name:offset:size, got '" + line.substr(0, 40) + "'");
    GroupSpan g{parse_count(line.substr(a + 1, b - a - 1), arena_field), parse_count(line.substr(b + 1), arena_field)};
    spans[line.substr(0, a)] = g;
    total = std::max(total, g.offset + g.size);
  }
  // Each path stores its whole arena: a claim larger than the file is impossible.
  if (double(total) * 4 * double(paths) > double(h5_file_size(f)))
    throw CheckpointError(arena_field + " claims " + std::to_string(paths) + " path(s) of " + std::to_string(total) +
                          " values, more than the file holds");
  std::vector<std::vector<float>> params(paths, std::vector<float>(total));
  std::vector<long> path_step(paths);
  std::vector<double> shard(paths);
  std::vector<std::string> path_modules(paths);
  for (long p = 0; p < paths; ++p) {
    H5Id g = open_group(pg, "P" + std::to_string(p));
    read_floats(g, "params", total, params[p].data(), file);
    path_step[p] = read_attr_scalar<long>(g, "step", H5T_NATIVE_LONG);
    shard[p] = read_attr_scalar<double>(g, "shard_tokens", H5T_NATIVE_DOUBLE);
    path_modules[p] = read_attr_string(g, "modules");
  }

  // Modules: anchor norm, and each holding path's drift from the anchor.
  JsonRecord out;
  out.add("file", file).add("dipaco_version", version).add("git_commit", commit).add("inner_step", step)
      .add("outer_round", round).add("world_size", world).add("wall_time", wall).add("paths", paths).add("levels", levels);
  std::ostringstream text, modules_json;
  text << "checkpoint " << file << "\n  dipaco " << version << " (" << commit << "), written by " << world
       << " rank(s) after " << format_duration(wall) << "\n  inner step " << step << ", outer round " << round << ", "
       << paths << " path(s), " << levels << " level(s)\n\nmodule            params   anchor norm   drift (max over paths)\n";
  modules_json << "[";
  std::vector<std::pair<std::string, std::string>> units;  // (hdf5 group, arena group)
  if (H5Lexists(f, "/modules/embeddings", H5P_DEFAULT) > 0) units.push_back({"/modules/embeddings", "embeddings"});
  for (long l = 0; l < levels; ++l)
    for (long m = 0;; ++m) {
      std::string g = "/modules/L" + std::to_string(l) + "/M" + std::to_string(m);
      if (H5Lexists(f, ("/modules/L" + std::to_string(l)).c_str(), H5P_DEFAULT) <= 0 || H5Lexists(f, g.c_str(), H5P_DEFAULT) <= 0) break;
      units.push_back({g, "L" + std::to_string(l)});
    }
  for (size_t i = 0; i < units.size(); ++i) {
    const auto& [gname, arena_group] = units[i];
    auto it = spans.find(arena_group);
    if (it == spans.end()) throw CheckpointError(arena_field + " has no group " + arena_group + " for " + gname);
    GroupSpan span = it->second;
    std::vector<float> anchor(span.size);
    std::string holders;
    {
      H5Id g = open_group(f, gname);
      read_floats(g, "anchor", span.size, anchor.data(), file);
      holders = read_attr_string(g, "paths");
    }
    double drift = 0;
    std::istringstream hs(holders);
    std::string tok;
    while (std::getline(hs, tok, ',')) {
      size_t p = parse_count(tok, file + ": attribute paths of " + gname);
      if (p >= size_t(paths)) continue;
      double d = 0;
      for (size_t j = 0; j < span.size; ++j) {
        double x = params[p][span.offset + j] - anchor[j];
        d += x * x;
      }
      drift = std::max(drift, std::sqrt(d));
    }
    double an = norm(anchor, 0, span.size);
    char row[160];
    std::snprintf(row, sizeof row, "%-16s %9zu   %11.4f   %.3g\n", gname.substr(9).c_str(), span.size, an, drift);
    text << row;
    modules_json << (i ? "," : "")
                 << JsonRecord().add("module", gname.substr(9)).add("params", long(span.size)).add("anchor_norm", an)
                        .add("drift", drift).add("paths", holders).str();
  }
  modules_json << "]";
  text << "\npath  modules      step   shard tokens   weight norm\n";
  std::ostringstream paths_json;
  paths_json << "[";
  for (long p = 0; p < paths; ++p) {
    char row[160];
    double n = norm(params[p], 0, total);
    std::snprintf(row, sizeof row, "P%-4ld %-11s %6ld   %12.0f   %11.4f\n", p, path_modules[p].c_str(), path_step[p], shard[p], n);
    text << row;
    paths_json << (p ? "," : "")
               << JsonRecord().add("path", p).add("modules", path_modules[p]).add("step", path_step[p])
                      .add("shard_tokens", shard[p]).add("weight_norm", n).str();
  }
  paths_json << "]";
  std::vector<double> es, eb;
  {
    H5Id metrics = open_group(f, "/metrics");
    es = read_doubles(metrics, "eval_step", 1 << 24), eb = read_doubles(metrics, "eval_bpb", 1 << 24);
  }
  if (es.size() != eb.size()) throw CheckpointError(file + ": datasets /metrics/eval_step and eval_bpb differ in length");
  if (!eb.empty()) text << "\nlast validation: " << eb.back() << " bits per byte at step " << es.back() << "\n";
  if (json) {
    out.add_raw("modules", modules_json.str()).add_raw("path_table", paths_json.str()).add_raw("eval_step", json_array(es))
        .add_raw("eval_bpb", json_array(eb)).add("deck", deck);
    std::printf("%s\n", out.str().c_str());
  } else {
    std::printf("%s\ndeck:\n%s", text.str().c_str(), deck.c_str());
  }
  return kExitOk;
}

}  // namespace dipaco
