// Helpers for MPI tests: train a deck on a communicator and gather every
// path's final weights onto all ranks of that communicator.
#pragma once
#include <mpi.h>

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "dipaco/data/corpus.hpp"
#include "dipaco/data/input_files.hpp"
#include "dipaco/io/deck.hpp"
#include "dipaco/model/kernels.hpp"
#include "dipaco/data/shards.hpp"
#include "dipaco/train/trainer.hpp"

namespace testing_mpi {

inline int world_rank() {
  int r;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}
inline int world_size() {
  int n;
  MPI_Comm_size(MPI_COMM_WORLD, &n);
  return n;
}

// Each path's documents by a rule of route.method (hash, domain): the shards without a route stage.
inline std::vector<dipaco::Shard> shard_by_rule(const dipaco::DocList& docs, int paths, dipaco::RouteMethod rule) {
  return dipaco::shards_of(docs, dipaco::assign_by_rule(docs, paths, rule));
}

// A temporary directory shared by all ranks (rank 0 picks the name).
inline std::string shared_tmpdir(const std::string& tag) {
  char buf[256] = {};
  if (world_rank() == 0) {
    std::string d = ::testing::TempDir() + "/dipaco_" + tag + "_" + std::to_string(getpid());
    std::filesystem::remove_all(d);
    std::filesystem::create_directories(d);
    std::snprintf(buf, sizeof buf, "%s", d.c_str());
  }
  MPI_Bcast(buf, sizeof buf, MPI_CHAR, 0, MPI_COMM_WORLD);
  return buf;
}

// The embedded corpus, read whole (it is small) and split by the in-memory rule.
inline const std::vector<dipaco::InputDocument>& corpus_documents() {
  static const std::vector<dipaco::InputDocument> docs = [] {
    std::vector<dipaco::InputDocument> out;
    for (auto& p : dipaco::plan_pieces({std::string(DIPACO_SOURCE_DIR) + "/inputs/corpus/embedded.jsonl"}, 0))
      dipaco::read_piece(p, {}, [&](dipaco::InputDocument&& d) { out.push_back(std::move(d)); });
    return out;
  }();
  return docs;
}
inline std::vector<dipaco::Document> corpus_views() {
  std::vector<dipaco::Document> views;
  for (auto& d : corpus_documents()) views.push_back({d.id, d.domain, d.text});
  return views;
}
// The split these tests train on: documents in the order of their ids (the
// order the tests' expected figures were measured in; a run's store keeps the
// input order instead, TokenStore.SplitAndDocumentsMatchTheInMemoryReader).
inline const dipaco::Split& corpus() {
  static const dipaco::Split s = [] {
    std::vector<dipaco::Document> views = corpus_views();
    std::stable_sort(views.begin(), views.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
    return dipaco::split_corpus(views, 0.1, 2);
  }();
  return s;
}

// A small DiPaCo deck: 2x2 paths, one block per level, d=32.
inline std::vector<std::string> tiny_deck() {
  return {"model.d_model=32",  "model.n_layers=2",        "model.n_heads=2",          "model.context=32",
          "train.batch_size=4", "train.steps=6",           "train.warmup=2",           "train.lr=3e-3",
          "eval.every=0",       "eval.batches=1",          "dipaco.modules_per_level=2,2", "model.layers_per_level=1,1",
          "dipaco.inner_steps=3", "run.threads=1",         "run.log_every=1000"};
}

struct RunOut {
  std::vector<std::vector<float>> params;  // [path][arena], on every rank of comm
  dipaco::TrainSummary summary;
  dipaco::ParamLayout layout;
};

inline RunOut train_on(MPI_Comm comm, std::vector<std::string> overrides) {
  dipaco::Deck deck = dipaco::load_deck("", overrides);
  auto k = dipaco::make_cpu_kernels();
  const int P = dipaco::path_count(deck.dipaco.modules_per_level);
  auto train = shard_by_rule(corpus().train, P, deck.route.method);
  auto val = shard_by_rule(corpus().val, P, deck.route.method);
  dipaco::Trainer t(deck, comm, *k, train, val, "", false);
  RunOut out;
  out.summary = t.run();
  out.layout = t.layout();
  int rank;
  MPI_Comm_rank(comm, &rank);
  out.params.assign(P, std::vector<float>(out.layout.total));
  for (int p = 0; p < P; ++p) {
    int root = t.topology().ranks_of_path(p)[0];
    if (rank == root)
      for (auto& ps : t.paths())
        if (ps.id == p) k->to_host(out.params[p].data(), ps.params.get(), out.layout.total * sizeof(float));
    MPI_Bcast(out.params[p].data(), int(out.layout.total), MPI_FLOAT, root, comm);
  }
  return out;
}

inline double max_abs_diff(const float* a, const float* b, size_t n) {
  double m = 0;
  for (size_t i = 0; i < n; ++i) m = std::max(m, double(std::abs(a[i] - b[i])));
  return m;
}

}  // namespace testing_mpi
