// dipaco route MODEL.h5 FILE.jsonl | --text TEXT: what the router learned.
// Each document goes where the routed evaluation would send it (the features
// of its first route.prefix_tokens bytes through the run's router); then a
// table of domains against paths.
#include <omp.h>

#include <cstdio>
#include <cstdlib>
#include <map>

#include "dipaco/cmd/app.hpp"
#include "dipaco/cmd/options.hpp"
#include "dipaco/cmd/trained_model.hpp"
#include "dipaco/data/input_files.hpp"
#include "dipaco/io/deck.hpp"
#include "dipaco/io/input_error.hpp"
#include "dipaco/train/metrics.hpp"

namespace dipaco {
namespace {

const char* kRouteUsage = "usage: dipaco route MODEL.h5 (FILE.jsonl | --text TEXT) [--shards FILE] [--json]";

using DomainRows = std::map<std::string, std::vector<long>>;  // domain -> documents per path

void print_table(const DomainRows& by_domain, long documents, int P) {
  std::printf("\n%-16s", "domain");
  for (int p = 0; p < P; ++p) std::printf(" %6s", ("P" + std::to_string(p)).c_str());
  std::printf("  documents\n");
  std::vector<long> total(P, 0);
  for (const auto& [domain, row] : by_domain) {
    long n = 0;
    std::printf("%-16s", domain.c_str());
    for (int p = 0; p < P; ++p) std::printf(" %6ld", row[p]), n += row[p], total[p] += row[p];
    std::printf("  %ld\n", n);
  }
  std::printf("%-16s", "all");
  for (int p = 0; p < P; ++p) std::printf(" %6ld", total[p]);
  std::printf("  %ld\n", documents);
}

}  // namespace

int cmd_route(const Args& args) {
  std::string file, corpus, text, shards;
  bool have_text = false, json = false;
  for (size_t i = 0; i < args.size(); ++i) {
    if (is_flag(args[i], "--text")) text = option(args, i, "--text"), have_text = true;
    else if (is_flag(args[i], "--shards")) shards = option(args, i, "--shards");
    else if (args[i] == "--json") json = true;
    else if (args[i].rfind("--", 0) == 0) throw UsageError("unknown option '" + args[i] + "'\n" + kRouteUsage);
    else if (file.empty()) file = args[i];
    else if (corpus.empty()) corpus = args[i];
    else throw UsageError(kRouteUsage);
  }
  if (file.empty() || have_text == !corpus.empty()) throw UsageError(kRouteUsage);
  if (have_text && text.empty()) throw UsageError("--text needs a non-empty text");
  if (!std::getenv("OMP_NUM_THREADS")) omp_set_num_threads(1);  // one document at a time
  const TrainedModel m = open_trained_model(file);
  if (m.only_path >= 0) throw InputError("'" + file + "' holds one path; route reads a checkpoint or a --all export");
  require_text_model(m, "route");
  const RunRouter rr = load_run_router(m, shards);
  const TextRouter router(rr, m);
  if (!json)
    std::printf("router %s (%s, %d paths) on the first %d %s of each document, features of %s\n", rr.shard_file.c_str(),
                rr.router.mode.c_str(), m.paths, rr.prefix, m.tokenizer ? "tokens" : "bytes", rr.warm_file.c_str());
  DomainRows by_domain;
  long documents = 0;
  auto one = [&](const std::string& id, const std::string& domain, const std::string& t) {
    RouteChoice c = router.route(t);
    auto& row = by_domain[domain];
    row.resize(m.paths, 0);
    ++row[c.path], ++documents;
    if (json)
      std::printf("{\"id\":\"%s\",\"domain\":\"%s\",\"path\":%d,\"score\":%.6g,\"why\":\"%s\"}\n", json_escape(id).c_str(),
                  json_escape(domain).c_str(), c.path, c.scores[c.path], json_escape(c.why()).c_str());
    else std::printf("%-40s %-14s P%d  %s\n", id.c_str(), domain.c_str(), c.path, c.why().c_str());
  };
  if (have_text) one("text", "-", text);
  else  // streamed: a corpus of any size, in data.corpus's forms
    for (const auto& piece : plan_pieces(expand_inputs(corpus), uint64_t(64) << 20))
      read_piece(piece, InputOptions{}, [&](InputDocument&& d) { one(d.id, d.domain, d.text); });
  if (!json && documents > 1) print_table(by_domain, documents, m.paths);
  return kExitOk;
}

}  // namespace dipaco
