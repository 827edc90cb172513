// Input decks: INI files with [section] key = value, overridable on the
// command line as --section.key=value. Every key has a type, a default and a
// one-line meaning; bad input throws DeckError (exit code 2).
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "dipaco/io/input_error.hpp"

namespace dipaco {

struct DeckError : InputError {
  using InputError::InputError;
};

// The most paths (product of dipaco.modules_per_level) a deck may ask for.
constexpr long kMaxPaths = 1 << 20;

// The values of the choice keys. Each enum's names, in its order, are its
// choice_names ("a|b": the registry's choice text and what a deck may say).
enum class Device { cpu, cuda };
enum class PathAllreduce { automatic, mpi, nccl };
enum class TokenizerKind { bytes, sentencepiece };
enum class TokenizerType { unigram, bpe };
// Matmul precision. tf32: fp32 operands multiplied on tensor cores with 10-bit
// mantissas where the device has them (CUDA); the CPU computes it as fp32.
enum class Precision { fp32, tf32, bf16 };
enum class EarlyStop { none, path };
enum class RouteMethod { hash, domain, kmeans };
enum class Routing { product, residual, flat, factorised };
enum class Refit { centroid, logistic };
enum class SharedGroups { embeddings, none };
enum class SharingScale { none, sqrt, capped };
enum class ReplicaMode { data, diloco };
enum class OuterDtype { fp32, bf16, int8, fp4 };
enum class ErrorFeedback { on, off };
enum class KillTarget { rank, mpirun, stop };
enum class RerouteRouter { starts, windows };

template <typename E>
inline constexpr std::string_view choice_names = "";
template <> inline constexpr std::string_view choice_names<Device> = "cpu|cuda";
template <> inline constexpr std::string_view choice_names<PathAllreduce> = "auto|mpi|nccl";
template <> inline constexpr std::string_view choice_names<TokenizerKind> = "bytes|sentencepiece";
template <> inline constexpr std::string_view choice_names<TokenizerType> = "unigram|bpe";
template <> inline constexpr std::string_view choice_names<Precision> = "fp32|tf32|bf16";
template <> inline constexpr std::string_view choice_names<EarlyStop> = "none|path";
template <> inline constexpr std::string_view choice_names<RouteMethod> = "hash|domain|kmeans";
template <> inline constexpr std::string_view choice_names<Routing> = "product|residual|flat|factorised";
template <> inline constexpr std::string_view choice_names<Refit> = "centroid|logistic";
template <> inline constexpr std::string_view choice_names<SharedGroups> = "embeddings|none";
template <> inline constexpr std::string_view choice_names<SharingScale> = "none|sqrt|capped";
template <> inline constexpr std::string_view choice_names<ReplicaMode> = "data|diloco";
template <> inline constexpr std::string_view choice_names<OuterDtype> = "fp32|bf16|int8|fp4";
template <> inline constexpr std::string_view choice_names<ErrorFeedback> = "on|off";
template <> inline constexpr std::string_view choice_names<KillTarget> = "rank|mpirun|stop";
template <> inline constexpr std::string_view choice_names<RerouteRouter> = "starts|windows";

// The value named `text` (nullopt: none is).
template <typename E>
constexpr std::optional<E> choice_of(std::string_view text) {
  static_assert(!choice_names<E>.empty(), "an enum without choice_names");
  std::string_view rest = choice_names<E>;
  for (int i = 0;; ++i) {
    const size_t bar = rest.find('|');
    if (rest.substr(0, bar) == text) return E(i);
    if (bar == std::string_view::npos) return std::nullopt;
    rest.remove_prefix(bar + 1);
  }
}

// A value's name (what the deck says).
template <typename E>
std::string name(E value) {
  static_assert(!choice_names<E>.empty(), "an enum without choice_names");
  std::string_view rest = choice_names<E>;
  for (int i = 0; i < int(value); ++i) rest.remove_prefix(rest.find('|') + 1);
  return std::string(rest.substr(0, rest.find('|')));
}

struct Deck {
  struct Run {
    std::string name, out_dir, restart;
    Device device;
    PathAllreduce path_allreduce;
    uint64_t seed;
    int threads, log_every, restart_force;
    long stop_after;
    double max_hours, collective_timeout;
  } run;
  struct Data {
    std::string corpus, val, domain_key, store, tokenizer_model, decode_table;
    TokenizerKind tokenizer;
    TokenizerType tokenizer_type;
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
    Precision precision;
    EarlyStop early_stop;
  } train;
  struct Route {
    std::string warm_start;
    RouteMethod method;
    Routing routing;
    Refit refit;
    int prefix_tokens, kmeans_iters, overlap, em_rounds, em_candidates, fit_docs;
    int segment_tokens, segment_window;  // segment shards: cut every N tokens, each piece routed by the window before
    int warm_steps;  // the warm-start model's train.steps
    double max_shard_fraction, min_shard_fraction;
    double segment_margin;  // segment shards: a segment leaves its document's path only for a path nearer by this
  } route;
  struct Dipaco {
    std::vector<int> modules_per_level;
    std::vector<int> private_levels;  // levels whose modules are private to each path (ascending)
    int inner_steps, overlap_steps, outer_warmup;
    double outer_lr, outer_momentum;
    SharedGroups shared;
    SharingScale sharing_scale;
    OuterDtype outer_dtype;
    ReplicaMode replica_mode;
    ErrorFeedback error_feedback;
  } dipaco;
  struct Checkpoint {
    int every, keep;
  } checkpoint;
  struct Eval {
    int every, batches, reroute_every, reroute_window, doc_bytes;
    double reroute_margin;  // < 0: route.segment_margin
    RerouteRouter reroute_router;
  } eval;
  struct Fault {
    double drop_outer_prob, step_delay, slow_factor;
    std::string kill_at;
    KillTarget kill_target;
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
