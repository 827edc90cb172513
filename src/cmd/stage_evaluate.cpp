// Stage evaluate: each validation document scored by the path its prefix
// routes it to (re-routed every eval.reroute_every bytes with a router).
// Output: eval.json (and eval.stamp).
#include <mpi.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>

#include "dipaco/cmd/app.hpp"
#include "dipaco/cmd/run_context.hpp"
#include "dipaco/data/routed_eval.hpp"
#include "dipaco/data/segment_shards.hpp"
#include "dipaco/data/window_router.hpp"
#include "dipaco/io/files.hpp"
#include "dipaco/io/stamp.hpp"
#include "dipaco/train/metrics.hpp"

namespace fs = std::filesystem;

namespace dipaco {

namespace {

std::vector<int> path_of_val(const ShardFile& s, size_t n) {
  std::vector<int> out(n, 0);
  for (size_t p = 0; p < s.val.size(); ++p)
    for (int i : s.val[p]) out[i] = int(p);
  return out;
}

std::string routed_json(const RoutedEval& r, const Deck& deck, const std::string& unit) {
  JsonRecord dom;
  for (size_t d = 0; d < r.domains.size(); ++d) dom.add(r.domains[d], r.domain_bpb[d]);
  return JsonRecord()
      .add("val_bpb", r.bpb)
      .add("loss_unit", unit)
      .add("scored_bytes", r.bytes)
      .add("reroute_every", long(deck.eval.reroute_every))
      .add("reroute_router", name(deck.eval.reroute_router))
      .add("reroute_window", long(reroute_window(deck)))
      .add("reroute_margin", reroute_margin(deck))
      .add("routing_decisions", r.segments)
      .add_raw("path_val_bpb", json_array(r.path_bpb))
      .add_raw("path_scored_bytes", json_array(r.path_bytes))
      .add_raw("domain_val_bpb", dom.str())
      .add_raw("domain_scored_bytes", json_array(r.domain_bytes))
      .str();
}

void print_routed(const RoutedEval& r, const std::string& unit) {
  const char* per = unit == "bits per byte" ? "bytes" : "tokens";
  say("routed validation: %.4f %s over %.0f scored %s (%ld routing decisions)\n", r.bpb, unit.c_str(), r.bytes, per, r.segments);
  for (size_t d = 0; d < r.domains.size(); ++d)
    say("  %-14s %.4f %s (%.0f %s)\n", r.domains[d].c_str(), r.domain_bpb[d], *per == 'b' ? "bpb" : "bits/token",
        r.domain_bytes[d], per);
}

}  // namespace

std::string evaluate_stamp_lines(const RunContext& c) {
  // 2: the windows router reads documents spread over each shard (1: its first ones).
  const bool windows = c.deck.eval.reroute_every > 0 && c.deck.eval.reroute_router == RerouteRouter::windows;
  return train_stamp_lines(c) + (windows ? "windows_router = 2\n" : "") +
         "checkpoint_step = " + std::to_string(c.trainer->progress().step) +
         "\nshard_round = " + std::to_string(c.shards.round) + "\n";
}

bool up_to_date_evaluate(const RunContext& c, const std::string& stamp) {
  return same_stamp(read_text_everywhere(c.run_dir + "/eval.stamp"), stamp) && fs::exists(c.run_dir + "/eval.json");
}

bool load_evaluate(RunContext& c, const std::string&, std::string& note) {
  c.routed_text = read_text(c.run_dir + "/eval.json");
  const auto at = c.routed_text.find("\"val_bpb\":");
  // null (not finite) reads as NaN, never as atof's 0.
  char* end = nullptr;
  c.routed_bpb = at == std::string::npos ? NAN : std::strtod(c.routed_text.c_str() + at + 10, &end);
  if (at != std::string::npos && end == c.routed_text.c_str() + at + 10) c.routed_bpb = NAN;
  while (!c.routed_text.empty() && c.routed_text.back() == '\n') c.routed_text.pop_back();
  char line[96];
  std::snprintf(line, sizeof line, ": routed validation %.4f %s", c.routed_bpb, c.loss_unit.c_str());
  note = line;
  return true;
}

int make_evaluate(RunContext& c, const std::string& stamp) {
  if (c.deck.eval.reroute_every > 0 && !c.shards.has_router)
    say("note: eval.reroute_every needs route.method = kmeans; each document is routed once");
  const double t0 = MPI_Wtime();
  const Router* router = c.shards.has_router ? &c.shards.router : nullptr;
  const bool rerouting = router && c.deck.eval.reroute_every > 0;
  // Re-routing reads windows of eval.reroute_window tokens: features pooled over that many.
  FeatureModel* features = rerouting ? &c.features(int(reroute_window(c.deck))) : &c.features();
  Router windows;
  if (rerouting && c.deck.eval.reroute_router == RerouteRouter::windows) {
    // Re-routed as the segments were cut: by the router that cut them (not one fit again, which
    // eval.doc_bytes would change); other windows get their own.
    const Deck& d = c.deck;
    if (c.segment_router && d.eval.reroute_every == d.route.segment_tokens && reroute_window(d) == segment_window(d) &&
        reroute_margin(d) == d.route.segment_margin) {
      windows = *c.segment_router;
      say("re-routing by the windows router that cut the segment shards\n");
    } else {
      windows = reroute_router(c.shards.train, c.split.train, c.trainer->topology(), c.rank, *features, d, c.trainer->world());
    }
    router = &windows;
  }
  const RoutedEval routed =
      routed_evaluate(*c.trainer, c.split.val, path_of_val(c.shards, c.split.val.size()), router, *features, c.deck);
  c.routed_text = routed_json(routed, c.deck, c.loss_unit);
  c.routed_bpb = routed.bpb;
  if (c.rank == 0) {
    const std::string file = c.run_dir + "/eval.json";
    write_file_atomic(file, c.routed_text + "\n");
    // An evaluation that met a loss that is not finite is made again next time (the run exits non-zero).
    if (std::isfinite(routed.bpb)) write_file_atomic(c.run_dir + "/eval.stamp", stamp);
    say("stage evaluate: done in %s -> %s\n", format_duration(MPI_Wtime() - t0).c_str(), file.c_str());
    print_routed(routed, c.loss_unit);
  }
  return kExitOk;
}

}  // namespace dipaco
