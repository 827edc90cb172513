// Input decks: INI files with [section] key = value, overridable on the
// command line as --section.key=value. Every key has a type, a default and a
// one-line meaning; bad input throws DeckError (exit code 2).
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "dipaco/io/input_error.hpp"

namespace dipaco {

struct DeckError : InputError {
  using InputError::InputError;
};

// The most paths (product of dipaco.modules_per_level) a deck may ask for.
constexpr long kMaxPaths = 1 << 20;

struct Deck {
  struct Run {
    std::string name, out_dir, device, path_allreduce, restart;
    uint64_t seed;
    int threads, log_every, restart_force;
    long stop_after;
    double max_hours, collective_timeout;
  } run;
  struct Data {
    std::string corpus, val, domain_key, store, tokenizer, tokenizer_model, tokenizer_type, decode_table;
    double val_fraction, piece_mb, tokenizer_sample_mb;
    int min_val_docs, eot_token, tokenizer_vocab;
  } data;
  struct Model {
    int d_model, n_layers, n_heads, context, vocab_size;
    std::vector<int> layers_per_level;
  } model;
  struct Train {
    int steps, batch_size, warmup, micro_batch, diverge_limit;
    double lr, min_lr_ratio, weight_decay, beta1, beta2, eps, grad_clip, diverge_factor;
    std::string precision, early_stop;
  } train;
  struct Route {
    std::string method, routing, warm_start, refit;
    int prefix_tokens, kmeans_iters, overlap, em_rounds, em_candidates, fit_docs;
    int warm_steps;  // the warm-start model's train.steps
    double max_shard_fraction, min_shard_fraction;
  } route;
  struct Dipaco {
    std::vector<int> modules_per_level;
    std::vector<int> private_levels;  // levels whose modules are private to each path (ascending)
    int inner_steps, overlap_steps, outer_warmup;
    double outer_lr, outer_momentum;
    std::string shared, sharing_scale, outer_dtype, replica_mode, error_feedback;
  } dipaco;
  struct Checkpoint {
    int every, keep;
  } checkpoint;
  struct Eval {
    int every, batches, reroute_every, doc_bytes;
  } eval;
  struct Fault {
    double drop_outer_prob, step_delay, slow_factor;
    std::string kill_at, kill_target;
    int kill_rank, slow_path, slow_moves, diverge_path;
    std::vector<int> diverge_steps;
  } fault;

  // Resolved values as text, keyed "section.key", in the registry's order.
  std::map<std::string, std::string> values;
  std::string source;  // the deck file ("" for defaults only)

  // The fully resolved deck as INI text (what will actually run).
  std::string text() const;
};

// The first stage of a run whose output a key changes (its stamp holds the key,
// and every later stage's does too); none: a key that changes no output.
enum class DeckStage { none, prepare, warm_start, route, train, evaluate };

struct DeckKey {
  std::string name;     // "section.key"
  std::string type;     // int, float, string, list, or choice "a|b"
  std::string deflt;    // default as text
  std::string help;     // one line
  std::function<void(Deck&, const std::string&)> set;  // parse + validate
  DeckStage stage = DeckStage::none;
  bool shape = false;  // changes the parameters' shapes: a checkpoint of another value cannot be resumed
  DeckKey at(DeckStage s) && { return stage = s, std::move(*this); }
  DeckKey shaping() && { return shape = true, std::move(*this); }
};
const char* stage_name(DeckStage s);  // "prepare", "warm start", ...

const std::vector<DeckKey>& deck_keys();
const DeckKey& deck_key(const std::string& name);  // throws DeckError for a name not in the registry

// One override as given: "--section.key=value", "section.key=value", or
// "--section.key" (on a command line its value is the next argument).
struct Override {
  std::string key;  // "section.key", without the dashes; no '.' in it: not an override
  std::string value;
  bool has_value = false;  // an '=' was given (the value may be empty)
};
Override split_override(const std::string& arg);

// Reads FILE (may be "" for defaults) and applies overrides of the form
// --section.key=value (or section.key=value). Throws DeckError.
Deck load_deck(const std::string& file, const std::vector<std::string>& overrides = {});

// The same from deck text (e.g. the deck stored in a checkpoint); `name` labels errors.
Deck load_deck_text(const std::string& text, const std::string& name, const std::vector<std::string>& overrides = {});
Deck load_deck_source(const std::string& file, const std::string* text, const std::vector<std::string>& overrides);
// A variant of a deck (the warm start's, a dense twin): its text with overrides,
// checked like any deck, so that what it records (text()) is what it runs.
Deck with_overrides(const Deck& deck, const std::vector<std::string>& overrides);

// `dipaco --help` text for all keys.
std::string deck_help();

// Closest valid key by edit distance ("" when nothing is close).
std::string closest_key(const std::string& name);

}  // namespace dipaco
