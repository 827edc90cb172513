// Commands that only read a deck: usage, deck, topology.
#include <climits>
#include <cstdio>
#include <sstream>

#include "dipaco/cmd/app.hpp"
#include "dipaco/cmd/options.hpp"
#include "dipaco/io/parse_number.hpp"
#include "dipaco/io/deck.hpp"
#include "dipaco/io/input_error.hpp"
#include "dipaco/dist/memory_estimate.hpp"
#include "dipaco/model/model.hpp"
#include "dipaco/dist/topology.hpp"
#include "dipaco/train/trainer.hpp"

namespace dipaco {

std::string usage() {
  return "usage: dipaco <command> [DECK.ini] [--section.key=value ...]\n"
         "\n"
         "commands:\n"
         "  run DECK.ini [overrides]         prepare, warm start, route, train, evaluate (under mpirun -np R);\n"
         "                                   finished stages are skipped; writes <run.out_dir>/<run.name>/\n"
         "                                   {deck.ini,shards.h5,metrics.jsonl,eval.json,summary.json,...}\n"
         "  deck DECK.ini [overrides]        print the fully resolved deck (what would run)\n"
         "  topology DECK.ini --ranks R      print paths, modules, rank placement and traffic\n"
         "  inspect CKPT.h5 [--json|--layout] what a checkpoint holds: step, modules, drift, paths\n"
         "  export CKPT.h5 --path P OUT.h5   one path as a dense model, one HDF5 dataset per tensor\n"
         "  export CKPT.h5 --all OUT.h5      every module once, the path table and the router\n"
         "  evaluate MODEL.h5 [--path P]     a path's validation bits per byte on its own shard\n"
         "           [--text FILE]           or on a text file's bytes\n"
         "  generate MODEL.h5 --prompt TEXT  routed sampling with a KV cache [--tokens N --temperature T\n"
         "                                   --top-k K --top-p P --seed S --path N | --reroute-every N --json]\n"
         "  route MODEL.h5 FILE.jsonl        each document's path and score, and domains against paths\n"
         "        MODEL.h5 --text TEXT       (MODEL: a checkpoint or an --all export)\n"
         "  --help                           this text; --version\n"
         "\n"
         "exit codes: 0 ok, 1 runtime failure, 2 bad input (deck, corpus, arguments, rank count),\n"
         "            3 stopped with a checkpoint (signal or run.max_hours: resubmit to resume),\n"
         "            4 a peer rank died or stopped responding (run.collective_timeout)\n"
         "\n"
         "deck keys (INI sections; each may be overridden as --section.key=value):\n" +
         deck_help();
}

void split_deck_args(const Args& args, std::string& deck, Args& overrides, Args* extra) {
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a.rfind("--", 0) == 0) {
      if (const Override o = split_override(a); o.key.find('.') != std::string::npos) {
        // "--a.b=c" or "--a.b c"
        if (!o.has_value && i + 1 < args.size()) overrides.push_back(a + "=" + args[++i]);
        else overrides.push_back(a);
        continue;
      }
      if (extra) {
        extra->push_back(a);
        if (a.find('=') == std::string::npos && i + 1 < args.size() && args[i + 1].rfind("--", 0) != 0)
          extra->push_back(args[++i]);
        continue;
      }
      throw UsageError("unknown option '" + a + "'");
    }
    if (!deck.empty()) throw UsageError("more than one deck file given: '" + deck + "' and '" + a + "'");
    deck = a;
  }
}

int cmd_deck(const Args& args) {
  std::string file;
  Args ov;
  split_deck_args(args, file, ov);
  Deck d = load_deck(file, ov);
  std::printf("# resolved deck%s\n%s", file.empty() ? " (defaults)" : (" from " + file).c_str(), d.text().c_str());
  return kExitOk;
}

namespace {

// The topology's rows of level modules (shared, or one private row per level);
// returns their fp32 bytes all-reduced per outer round, summed over ranks.
double level_rows(const Deck& d, const Topology& t, const ParamLayout& layout, std::ostringstream& o) {
  const bool replica_units = d.dipaco.replica_mode == ReplicaMode::diloco && t.ranks_per_path > 1;
  double bytes = 0;
  char line[256];
  for (int l = 0; l < t.levels(); ++l) {
    const auto& grp = layout.groups[1 + l];
    const std::string level = "L" + std::to_string(l);
    const std::string blocks =
        " (blocks " + std::to_string(grp.first_block) + "-" + std::to_string(grp.first_block + grp.n_blocks - 1) + ")";
    if (t.is_private(l)) {
      // One module per path: never communicated, or averaged among the path's DiLoCo replicas.
      std::snprintf(line, sizeof line, "%-22s %-12s %9zu   %s\n", (level + ".P*" + blocks).c_str(), "private", grp.size,
                    replica_units ? "each path's own ranks (its DiLoCo replicas)" : "(never communicated)");
      o << line;
      if (replica_units) bytes += 4.0 * grp.size * t.ranks;
      continue;
    }
    for (int m = 0; m < t.modules_per_level[l]; ++m) {
      std::string rs;
      for (int r : t.module_ranks(l, m)) rs += std::to_string(r) + " ";
      std::snprintf(line, sizeof line, "%-22s %-12s %9zu   %s\n", (level + ".M" + std::to_string(m) + blocks).c_str(),
                    (std::to_string(t.paths_with_module(l, m).size()) + " paths").c_str(), grp.size, rs.c_str());
      o << line;
      bytes += 4.0 * grp.size * t.module_ranks(l, m).size();
    }
  }
  return bytes;
}

}  // namespace

int cmd_topology(const Args& args) {
  std::string file;
  Args ov, extra;
  split_deck_args(args, file, ov, &extra);
  int ranks = 1;
  for (size_t i = 0; i < extra.size(); ++i) {
    std::string a = extra[i];
    if (a.rfind("--ranks", 0) != 0) throw UsageError("unknown option '" + a + "' (topology takes --ranks R)");
    std::string v = a.find('=') != std::string::npos ? a.substr(a.find('=') + 1) : (i + 1 < extra.size() ? extra[++i] : "");
    // Text that is no number is told so; a number out of range is told the range.
    if (!parse_integer(v, LLONG_MIN, LLONG_MAX)) throw UsageError("--ranks needs a positive integer, got '" + v + "'");
    ranks = int(int_option("--ranks", v, 1, 1 << 20));
  }
  Deck d = load_deck(file, ov);
  Topology t = make_topology(d.dipaco.modules_per_level, ranks, d.dipaco.private_levels);
  ParamLayout layout = make_layout(model_shape(d));
  std::ostringstream o;
  o << "levels: " << t.levels() << ", modules per level: " << d.values.at("dipaco.modules_per_level")
    << ", private levels: " << d.values.at("dipaco.private_levels") << ", paths: " << t.paths
    << ", ranks: " << ranks << " (" << (ranks >= t.paths ? std::to_string(t.ranks_per_path) + " rank(s) per path"
                                                          : std::to_string(t.paths_per_rank) + " paths per rank, trained in turn")
    << ")\n\npath  modules (level:module)   ranks\n";
  for (int p = 0; p < t.paths; ++p) {
    std::string mods, rs;
    auto m = t.path_modules(p);
    for (int l = 0; l < t.levels(); ++l) mods += "L" + std::to_string(l) + ":" + t.module_name(p, l) + " ";
    for (int r : t.ranks_of_path(p)) rs += std::to_string(r) + " ";
    char line[256];
    std::snprintf(line, sizeof line, "P%-4d %-24s %s\n", p, mods.c_str(), rs.c_str());
    o << line;
  }
  o << "\nparameter group        shared by     params   communicator ranks\n";
  const auto& emb = layout.groups[0];
  bool shared_emb = d.dipaco.shared == SharedGroups::embeddings;
  auto list = [](const std::vector<int>& v) {
    std::string s;
    for (int x : v) s += std::to_string(x) + " ";
    return s;
  };
  char line[256];
  std::vector<int> all(ranks);
  for (int r = 0; r < ranks; ++r) all[r] = r;
  std::snprintf(line, sizeof line, "%-22s %-12s %9zu   %s\n", "embeddings", shared_emb ? "all paths" : "private",
                emb.size, shared_emb ? ("world: " + list(all)).c_str() : "(never communicated)");
  o << line;
  double bytes_round = shared_emb ? 4.0 * emb.size * ranks : 0;
  bytes_round += level_rows(d, t, layout, o);
  o << "\nparameters per path: " << layout.total << " (" << layout.total * 4 / 1e6 << " MB fp32)\n";
  size_t total = shared_emb ? emb.size : emb.size * t.paths;
  for (int l = 0; l < t.levels(); ++l) total += layout.groups[1 + l].size * (t.is_private(l) ? t.paths : t.modules_per_level[l]);
  o << "parameters in all modules: " << total << "\n";
  o << "bytes all-reduced per outer round (fp32 payload, summed over ranks): " << bytes_round / 1e6 << " MB";
  if (d.dipaco.inner_steps > 0)
    o << "\nper inner step on average (H = " << d.dipaco.inner_steps << "): " << bytes_round / d.dipaco.inner_steps / 1e6
      << " MB; a data-parallel step would all-reduce " << 4.0 * layout.total * t.paths / 1e6 << " MB";
  // Rank 0 stands for all: every rank holds as many paths, and its units are as large.
  o << "\nmemory per rank: " << estimate_memory(d, t, 0, corpus_file_bytes(d)).describe() << "\n";
  std::printf("%s", o.str().c_str());
  return kExitOk;
}

}  // namespace dipaco
