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
#include "dipaco/data/corpus.hpp"
#include "dipaco/io/deck.hpp"
#include "dipaco/train/metrics.hpp"

namespace dipaco {
namespace {

const char* kRouteUsage = "usage: dipaco route MODEL.h5 (FILE.jsonl | --text TEXT) [--shards FILE] [--json]";

void print_table(const std::vector<Document>& docs, const std::vector<int>& path, int P) {
  std::map<std::string, std::vector<long>> by_domain;
  for (size_t i = 0; i < docs.size(); ++i) {
    auto& row = by_domain[docs[i].domain];
    row.resize(P, 0);
    ++row[path[i]];
  }
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
  std::printf("  %zu\n", docs.size());
}

}  // namespace

int cmd_route(const Args& args) {
  std::string file, corpus, text, shards;
  bool have_text = false, json = false;
  for (size_t i = 0; i < args.size(); ++i) {
    if (is_flag(args[i], "--text")) text = option(args, i, "--text"), have_text = true;
    else if (is_flag(args[i], "--shards")) shards = option(args, i, "--shards");
    else if (args[i] == "--json") json = true;
    else if (args[i].rfind("--", 0) == 0) throw DeckError("unknown option '" + args[i] + "'\n" + kRouteUsage);
    else if (file.empty()) file = args[i];
    else if (corpus.empty()) corpus = args[i];
    else throw DeckError(kRouteUsage);
  }
  if (file.empty() || have_text == !corpus.empty()) throw DeckError(kRouteUsage);
  if (have_text && text.empty()) throw DeckError("--text needs a non-empty text");
  if (!std::getenv("OMP_NUM_THREADS")) omp_set_num_threads(1);  // one document at a time
  const TrainedModel m = open_trained_model(file);
  if (m.only_path >= 0) throw DeckError("'" + file + "' holds one path; route reads a checkpoint or a --all export");
  const RunRouter rr = load_run_router(m, shards);
  const TextRouter router(rr, m.shape);
  std::vector<Document> docs = have_text ? std::vector<Document>{{"text", "-", text}} : read_corpus(corpus);
  std::vector<int> path(docs.size());
  if (!json)
    std::printf("router %s (%s, %d paths) on the first %d bytes of each document, features of %s\n", rr.shard_file.c_str(),
                rr.router.mode.c_str(), m.paths, rr.prefix, rr.warm_file.c_str());
  for (size_t i = 0; i < docs.size(); ++i) {
    RouteChoice c = router.route(docs[i].text, 0);
    path[i] = c.path;
    if (json)
      std::printf("{\"id\":\"%s\",\"domain\":\"%s\",\"path\":%d,\"score\":%.6g,\"why\":\"%s\"}\n", json_escape(docs[i].id).c_str(),
                  json_escape(docs[i].domain).c_str(), c.path, c.scores[c.path], json_escape(c.why()).c_str());
    else std::printf("%-40s %-14s P%d  %s\n", docs[i].id.c_str(), docs[i].domain.c_str(), c.path, c.why().c_str());
  }
  if (!json && docs.size() > 1) print_table(docs, path, m.paths);
  return kExitOk;
}

}  // namespace dipaco
