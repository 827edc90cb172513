// What the stages of `dipaco run` share: the inputs every stage reads and the
// outputs each one leaves for the next. One per run, on every rank.
#pragma once
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "dipaco/data/corpus.hpp"
#include "dipaco/data/features.hpp"
#include "dipaco/data/router.hpp"
#include "dipaco/data/shards.hpp"
#include "dipaco/data/token_store.hpp"
#include "dipaco/dist/topology.hpp"
#include "dipaco/io/checkpoint.hpp"
#include "dipaco/io/deck.hpp"
#include "dipaco/io/log.hpp"  // say: the stages' lines
#include "dipaco/model/kernels.hpp"
#include "dipaco/train/trainer.hpp"

namespace dipaco {

struct RunContext {
  RunContext(const Deck& d, int r, int s) : deck(d), rank(r), size(s) {}
  // Inputs.
  Deck deck;  // the run's, with model.vocab_size resolved from the data at prepare
  int rank, size;
  std::string run_dir;
  Topology topo;
  std::unique_ptr<Kernels> kernels;
  std::string store_dir;               // the token store (data.store, else RUN_DIR/store)
  std::unique_ptr<TokenStore> store;  // prepare -> the documents, memory-mapped
  Split split;                        // views into the store
  std::string corpus_line;  // "corpus.content_hash = ...", in every stamp
  // What the *_bpb figures measure: bits per byte on bytes; on token files
  // (whose tokens' bytes are unknown) the same log2 loss is per token.
  std::string loss_unit = "bits per byte";
  std::vector<uint8_t> token_bytes;  // a SentencePiece store's: every trainer scores bytes with it
  // warm start -> the weights every path starts from, whose features route.
  std::string warm_file;
  std::vector<float> warm;
  // route (and the train stage's re-sharding) -> the shards.
  ShardFile shards;
  // train -> the trained paths and their summary.
  Deck train_deck{};  // the deck the trainer runs (run.restart = never after a deck change)
  std::unique_ptr<Trainer> trainer;
  std::unique_ptr<Checkpointer> checkpointer;
  std::string resumed;  // the checkpoint the trainer resumed from ("" when fresh)
  // Segment shards: the windows router that cut them (made, or read back from
  // segments.h5 under this train stamp); empty without one. The evaluation re-routes by it.
  std::optional<Router> segment_router;
  // Seconds of the pieces of set-up that grow with the topology (summary.json's "seconds").
  std::vector<std::pair<std::string, double>> seconds;
  TrainSummary summary;
  double peak_rss_bytes = 0;  // the largest rank's peak resident memory, over the whole run
  // evaluate -> the routed evaluation.
  std::string routed_text;  // eval.json's record
  double routed_bpb = 0;

  // The warm-start model as a feature extractor, made on first use: over the
  // routing prefix, or over windows of another length (re-routing, segment shards).
  FeatureModel& features();
  FeatureModel& features(int window);

 private:
  std::unique_ptr<FeatureModel> features_;
  std::map<int, std::unique_ptr<FeatureModel>> window_features_;
};

// Helpers the stages share (pipeline.cpp).
std::string read_text(const std::string& path);               // "" when missing
std::string read_text_everywhere(const std::string& path);    // rank 0 reads, every rank gets it
std::string read_stamp_everywhere(const std::string& h5_file);  // its "stamp" attribute ("" when none), the same way
std::string shard_file_name(const std::string& run_dir, int round);
// Reads the training lists of `held` paths only (Topology::paths_of_rank).
bool load_shards(const std::string& file, const std::string& stamp, const Split& split, const std::vector<int>& held,
                 ShardFile& out);
void save_shards(const std::string& file, ShardFile& s, const std::string& stamp, const Split& split, int rank);
std::string shard_sizes(const std::vector<long>& docs);  // "n0 n1 ...": every path's training documents
// Re-sharding by loss (stage_route.cpp), for the train stage's em_rounds.
ShardFile reroute_by_loss(const Deck& deck, const Split& split, Trainer& t, FeatureModel& fm, const Router& now, int round);
// The train stamp's lines beyond the deck: the version of the segments' cut
// (a run cut by an earlier windows router is cut and trained again).
std::string train_stamp_lines(const RunContext& c);
// The evaluate stamp's lines beyond the deck: the train stamp's, the checkpoint and shards it scored.
std::string evaluate_stamp_lines(const RunContext& c);

// The stages, each in three steps; the pipeline's stage table (pipeline.cpp)
// lists them and calls load_X when up_to_date_X, else (or when load_X fails) make_X.
//   up_to_date_X: the stage's output exists with this stamp. It only reads
//     (stamps, file names), the same answer on every rank.
//   load_X: reads that output back into the context; false when it proves
//     unusable (damaged), so that the stage is made again. `note`: what the
//     "up to date" line adds.
//   make_X: runs the stage from what the earlier stages left in the context
//     and writes its output; returns an exit code (kExitOk: go on).
bool up_to_date_prepare(const RunContext& c, const std::string& stamp);
bool load_prepare(RunContext& c, const std::string& stamp, std::string& note);
int make_prepare(RunContext& c, const std::string& stamp);
bool up_to_date_warm_start(const RunContext& c, const std::string& stamp);
bool load_warm_start(RunContext& c, const std::string& stamp, std::string& note);
int make_warm_start(RunContext& c, const std::string& stamp);
bool up_to_date_route(const RunContext& c, const std::string& stamp);
bool load_route(RunContext& c, const std::string& stamp, std::string& note);
int make_route(RunContext& c, const std::string& stamp);
bool up_to_date_train(const RunContext& c, const std::string& stamp);
bool load_train(RunContext& c, const std::string& stamp, std::string& note);
int make_train(RunContext& c, const std::string& stamp);
bool up_to_date_evaluate(const RunContext& c, const std::string& stamp);
bool load_evaluate(RunContext& c, const std::string& stamp, std::string& note);
int make_evaluate(RunContext& c, const std::string& stamp);

}  // namespace dipaco
