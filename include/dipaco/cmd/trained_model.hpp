// A trained model as the inference commands (generate, route, export,
// evaluate) see it: a training checkpoint (every path, the run's router and
// warm start found from its run directory) or an exported file (one path or
// all of them, tensors by name; see named_tensors.hpp).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "dipaco/cmd/app.hpp"
#include "dipaco/data/router.hpp"
#include "dipaco/data/tokenizer.hpp"
#include "dipaco/io/deck.hpp"
#include "dipaco/model/model.hpp"

namespace dipaco {

struct TrainedModel {
  std::string file, kind;  // kind: "checkpoint", "path export" or "whole-model export"
  std::string deck_text;   // the deck of the run that trained it
  std::string source;      // the checkpoint it came from (the file itself for a checkpoint)
  Deck deck;               // that deck, resolved
  ModelShape shape;        // one path as a dense model
  int paths = 1;
  long only_path = -1;     // a one-path export: the path it holds
  std::vector<std::vector<float>> path_params;  // [paths] arenas; only only_path's for a one-path export
  // The SentencePiece model the run encoded its text with (a checkpoint: the
  // run's store/tokenizer.model; an export: the copy it carries); null for bytes.
  std::shared_ptr<const Tokenizer> tokenizer;
  const std::vector<float>& params(int path) const;
};
// A text as the model's tokens (its bytes, or its SentencePiece ids), and back.
std::vector<int32_t> encode_text(const TrainedModel& m, const std::string& text);
std::string decode_tokens(const TrainedModel& m, const std::vector<int32_t>& ids);
// The end-of-document token (0 for bytes).
int32_t end_token(const TrainedModel& m);

// Throws InputError (exit 2) for a file that is neither, naming what it is.
TrainedModel open_trained_model(const std::string& file);
// Commands that read and write text (generate, route): a model of token ids
// without a tokenizer (trained on token files) is refused (InputError), naming the command.
void require_text_model(const TrainedModel& m, const std::string& command);
// The dense deck of one path: the source deck with a single level and module.
Deck dense_deck(const std::string& source_deck, const Args& overrides = {});

// What routes a text: the run's router and the model whose features it reads.
struct RunRouter {
  Router router;
  std::vector<float> features_params;  // the warm start (or the initialisation when route.warm_steps = 0)
  std::string shard_file, warm_file;   // where they came from
  int prefix = 32;
};
// shards: a shard file to use instead of the run's newest ("" to find it).
// Throws InputError naming what is missing and how to give it.
RunRouter load_run_router(const TrainedModel& m, const std::string& shards);
// A run trained on segment shards (route.segment_tokens): the windows router
// that placed them, from its segments.h5 (an --all export: its /segment_router),
// reading route.segment_window tokens of the features model that `route` (the
// run's router, load_run_router) holds: the same warm start, read once.
RunRouter load_segment_router(const TrainedModel& m, const RunRouter& route);

// Routing one text: the path its bytes [begin, begin + prefix) pick, and every path's score.
struct RouteChoice {
  int path = 0;
  std::vector<double> scores;  // lower is nearer (squared distance, or the negative logit)
  std::string why() const;     // "squared distance 1.23 (next P1 at 1.50)" or "probability 0.91"
  std::string mode;
};
class TextRouter {
 public:
  explicit TextRouter(const RunRouter& r, const TrainedModel& m);
  RouteChoice route(const std::string& text) const;  // by its first prefix tokens
  // Tokens [begin, begin + prefix) of ids, then end-of-document tokens; `own`:
  // the text's own path, which keeps it within the router's stay (-1: none).
  RouteChoice route(const std::vector<int32_t>& ids, size_t begin, int own = -1) const;
  int prefix() const { return r_.prefix; }

 private:
  const RunRouter& r_;
  const TrainedModel& m_;
  ModelShape s_;                  // the prefix model's (features.hpp)
  std::vector<float> params_;     // the warm start cut to the prefix
  std::unique_ptr<Kernels> k_;
  std::unique_ptr<Model> model_;  // batch 1; route() reuses its activations
};

}  // namespace dipaco
