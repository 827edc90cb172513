// `dipaco inspect CKPT.h5 [--json] [--layout]`: what a checkpoint holds —
// deck, topology, round and step, per-module anchor norms and how far each
// path's local copy has drifted from its anchor, per-path step and shard size.
// Reads with the serial HDF5 driver: no MPI job needed.
#include <hdf5.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <set>
#include <sstream>

#include "dipaco/cmd/app.hpp"
#include "dipaco/io/checkpoint.hpp"
#include "dipaco/io/deck.hpp"
#include "dipaco/io/input_error.hpp"
#include "dipaco/train/metrics.hpp"
#include "dipaco/io/h5io.hpp"
#include "dipaco/io/path_arrays.hpp"
#include "dipaco/io/key_lines.hpp"

namespace dipaco {
namespace {

const std::string kCheckpointFiles = "<run dir>/checkpoints/ckpt-*.h5";

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

struct InspectArgs {
  std::string file;
  bool json = false, layout = false;
};

InspectArgs parse_args(const Args& args) {
  InspectArgs in;
  for (const auto& a : args) {
    if (a == "--json") in.json = true;
    else if (a == "--layout") in.layout = true;
    else if (a.rfind("--", 0) == 0) throw UsageError("unknown option '" + a + "' (inspect takes --json, --layout)");
    else in.file = a;
  }
  if (in.file.empty()) throw UsageError("usage: dipaco inspect CKPT.h5 [--json] [--layout]");
  return in;
}

// Opens a checkpoint, naming what a file is when it is not one.
H5Id open_checkpoint(const std::string& file) {
  std::error_code ec;
  if (!std::filesystem::exists(file, ec)) throw InputError("cannot open checkpoint '" + file + "': no such file");
  if (std::filesystem::is_directory(file, ec))
    throw InputError("cannot open checkpoint '" + file + "': it is a directory (checkpoints are " + kCheckpointFiles + ")");
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  H5Id f(H5Fopen(file.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  if (!f.ok()) throw InputError("cannot open checkpoint '" + file + "' (not an HDF5 file, or truncated)");
  // The other HDF5 files dipaco writes carry a "format" attribute (a checkpoint
  // has "format_version" instead): name them rather than a missing attribute.
  if (H5Aexists(f, "format") > 0) {
    const std::string format = read_attr_string(f, "format");
    const std::string what = format == "dipaco-shards" ? "a dipaco shard file"
                             : format == "dipaco-model" ? "an exported path model"
                                                        : "a '" + format.substr(0, 40) + "' file";
    throw InputError(file + " is " + what + ", not a checkpoint; inspect reads training checkpoints (" + kCheckpointFiles + ")");
  }
  // A warm-start file: one flat "params" dataset and the stage's stamp, no format_version.
  if (H5Aexists(f, "format_version") <= 0 && H5Aexists(f, "stamp") > 0 && H5Lexists(f, "params", H5P_DEFAULT) > 0)
    throw InputError(file + " is a warm-start file (the dense model every path starts from and whose features route), "
                    "not a checkpoint; inspect reads training checkpoints (" + kCheckpointFiles +
                    "; the warm start's own are in <run dir>/warmstart/checkpoints/)");
  return f;
}

// What inspect reports of a checkpoint, read and checked.
struct Contents {
  long step = 0, round = 0, world = 0, paths = 0, levels = 0;
  double wall = 0;
  std::string deck, version, commit;
  std::string arena_field;  // names the arena attribute in errors
  std::map<std::string, GroupSpan> spans;  // the arena's groups
  size_t total = 0;                        // arena size
  std::vector<std::vector<float>> params;  // per path
  std::vector<long> path_step;
  std::vector<double> shard;
  std::vector<std::string> path_modules;
  std::vector<double> eval_step, eval_bpb;
  std::string private_levels = "none";  // the deck's dipaco.private_levels
};

// A path's modules as "M0,P3": a private level shows the path's own module.
std::string module_names(const PathArrays& rows, long p) {
  std::string out;
  for (int l = 0; l < rows.levels(); ++l) {
    const std::string unit = rows.anchor_of("L" + std::to_string(l), p);
    out += (out.empty() ? "" : ",") + unit.substr(unit.rfind('/') + 1);
  }
  return out;
}

void read_header(hid_t f, Contents& c) {
  c.step = read_attr_scalar<long>(f, "inner_step", H5T_NATIVE_LONG);
  c.round = read_attr_scalar<long>(f, "outer_round", H5T_NATIVE_LONG);
  c.world = read_attr_scalar<long>(f, "world_size", H5T_NATIVE_LONG);
  c.wall = read_attr_scalar<double>(f, "wall_time", H5T_NATIVE_DOUBLE);
  c.deck = read_attr_string(f, "deck");
  c.version = read_attr_string(f, "dipaco_version");
  c.commit = read_attr_string(f, "git_commit");
  const auto keys = parse_key_lines(c.deck);
  if (auto it = keys.find("dipaco.private_levels"); it != keys.end()) c.private_levels = it->second;
  H5Id topo = open_group(f, "/topology");
  c.paths = read_attr_long(topo, "paths", 1, 1 << 20);
  c.levels = read_attr_long(topo, "levels", 1, 64);
}

// The arena's groups and every path's weights (replica 0).
void read_paths(hid_t f, const std::string& file, Contents& c) {
  c.arena_field = file + ": attribute arena_groups of /paths";
  PathArrays rows(f, file, c.paths);
  for (const auto& [name, span] : rows.groups()) c.spans[name] = span;
  c.total = rows.total();
  c.params.assign(c.paths, std::vector<float>(c.total));
  c.path_step.resize(c.paths);
  c.shard.resize(c.paths);
  c.path_modules.resize(c.paths);
  for (long p = 0; p < c.paths; ++p) {
    rows.read("params", p, 0, c.params[p].data());
    c.path_step[p] = rows.step(p);
    c.shard[p] = rows.shard_tokens(p);
    c.path_modules[p] = module_names(rows, p);
  }
}

void read_metrics(hid_t f, const std::string& file, Contents& c) {
  H5Id metrics = open_group(f, "/metrics");
  c.eval_step = read_doubles(metrics, "eval_step", 1 << 24);
  c.eval_bpb = read_doubles(metrics, "eval_bpb", 1 << 24);
  if (c.eval_step.size() != c.eval_bpb.size())
    throw CheckpointError(file + ": datasets /metrics/eval_step and eval_bpb differ in length");
}

// The checkpoint's shared modules: (HDF5 group, arena group) of each.
std::vector<std::pair<std::string, std::string>> module_units(hid_t f, long levels) {
  std::vector<std::pair<std::string, std::string>> units;
  if (H5Lexists(f, "/modules/embeddings", H5P_DEFAULT) > 0) units.push_back({"/modules/embeddings", "embeddings"});
  for (long l = 0; l < levels; ++l) {
    const std::string level = "/modules/L" + std::to_string(l);
    // Shared modules M<m>, then a private level's units P<p> (averaged among a path's DiLoCo replicas).
    for (const char* kind : {"/M", "/P"})
      for (long m = 0;; ++m) {
        const std::string g = level + kind + std::to_string(m);
        if (H5Lexists(f, level.c_str(), H5P_DEFAULT) <= 0 || H5Lexists(f, g.c_str(), H5P_DEFAULT) <= 0) break;
        units.push_back({g, "L" + std::to_string(l)});
      }
  }
  return units;
}

// The largest distance of a holding path's copy of a module from its anchor.
double max_drift(const Contents& c, const std::vector<float>& anchor, GroupSpan span, const std::string& holders,
                 const std::string& where) {
  double drift = 0;
  std::istringstream hs(holders);
  for (std::string tok; std::getline(hs, tok, ',');) {
    const size_t p = parse_count(tok, where);
    if (p >= size_t(c.paths)) continue;
    double d = 0;
    for (size_t j = 0; j < span.size; ++j) {
      const double x = c.params[p][span.offset + j] - anchor[j];
      d += x * x;
    }
    drift = std::max(drift, std::sqrt(d));
  }
  return drift;
}

// Module rows: anchor norm, and each holding path's drift from the anchor.
void module_rows(hid_t f, const std::string& file, const Contents& c, std::ostringstream& text, std::ostringstream& json) {
  json << "[";
  const auto units = module_units(f, c.levels);
  for (size_t i = 0; i < units.size(); ++i) {
    const auto& [gname, arena_group] = units[i];
    auto it = c.spans.find(arena_group);
    if (it == c.spans.end()) throw CheckpointError(c.arena_field + " has no group " + arena_group + " for " + gname);
    const GroupSpan span = it->second;
    std::vector<float> anchor(span.size);
    H5Id g = open_group(f, gname);
    read_floats(g, "anchor", span.size, anchor.data(), file);
    const std::string holders = read_attr_string(g, "paths");
    const double drift = max_drift(c, anchor, span, holders, file + ": attribute paths of " + gname);
    const double an = norm(anchor, 0, span.size);
    char row[160];
    std::snprintf(row, sizeof row, "%-16s %9zu   %11.4f   %.3g\n", gname.substr(9).c_str(), span.size, an, drift);
    text << row;
    json << (i ? "," : "")
         << JsonRecord().add("module", gname.substr(9)).add("params", long(span.size)).add("anchor_norm", an)
                .add("drift", drift).add("paths", holders).str();
  }
  json << "]";
}

void path_rows(const Contents& c, std::ostringstream& text, std::ostringstream& json) {
  json << "[";
  for (long p = 0; p < c.paths; ++p) {
    char row[160];
    const double n = norm(c.params[p], 0, c.total);
    std::snprintf(row, sizeof row, "P%-4ld %-11s %6ld   %12.0f   %11.4f\n", p, c.path_modules[p].c_str(), c.path_step[p],
                  c.shard[p], n);
    text << row;
    json << (p ? "," : "")
         << JsonRecord().add("path", p).add("modules", c.path_modules[p]).add("step", c.path_step[p])
                .add("shard_tokens", c.shard[p]).add("weight_norm", n).str();
  }
  json << "]";
}

}  // namespace

int cmd_inspect(const Args& args) {
  const InspectArgs in = parse_args(args);
  const std::string& file = in.file;
  H5Id f = open_checkpoint(file);
  if (in.layout) {
    std::ostringstream o;
    if (H5Ovisit(f, H5_INDEX_NAME, H5_ITER_INC, list_object, &o) < 0) throw CheckpointError(file + ": cannot list its objects");
    std::printf("checkpoint layout of %s (every float dataset has a 'checksum' attribute):\n%s", file.c_str(), o.str().c_str());
    return kExitOk;
  }
  check_checkpoint_format(f, file);
  Contents c;
  read_header(f, c);
  read_paths(f, file, c);
  std::ostringstream text, modules_json, paths_json;
  text << "checkpoint " << file << "\n  dipaco " << c.version << " (" << c.commit << "), written by " << c.world
       << " rank(s) after " << format_duration(c.wall) << "\n  inner step " << c.step << ", outer round " << c.round << ", "
       << c.paths << " path(s), " << c.levels << " level(s), private levels: " << c.private_levels
       << "\n\nmodule            params   anchor norm   drift (max over paths)\n";
  module_rows(f, file, c, text, modules_json);
  text << "\npath  modules      step   shard tokens   weight norm\n";
  path_rows(c, text, paths_json);
  read_metrics(f, file, c);
  if (!c.eval_bpb.empty()) text << "\nlast validation: " << c.eval_bpb.back() << " bits per byte at step " << c.eval_step.back() << "\n";
  if (!in.json) {
    std::printf("%s\ndeck:\n%s", text.str().c_str(), c.deck.c_str());
    return kExitOk;
  }
  JsonRecord out;
  out.add("file", file).add("dipaco_version", c.version).add("git_commit", c.commit).add("inner_step", c.step)
      .add("outer_round", c.round).add("world_size", c.world).add("wall_time", c.wall).add("paths", c.paths)
      .add("levels", c.levels).add("private_levels", c.private_levels);
  out.add_raw("modules", modules_json.str()).add_raw("path_table", paths_json.str()).add_raw("eval_step", json_array(c.eval_step))
      .add_raw("eval_bpb", json_array(c.eval_bpb)).add("deck", c.deck);
  std::printf("%s\n", out.str().c_str());
  return kExitOk;
}

}  // namespace dipaco
