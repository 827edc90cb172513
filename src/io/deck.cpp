// Input decks through Boost.Program_options. All values are read as text and
// converted here, so that every error can name the key, the value and what is
// allowed (Boost's own messages do not say what is allowed).
#include "dipaco/io/deck.hpp"

#include <algorithm>
#include <boost/program_options.hpp>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <utility>

#include "dipaco/io/parse_number.hpp"

namespace po = boost::program_options;

namespace dipaco {
namespace {

[[noreturn]] void bad_value(const std::string& key, const std::string& v, const std::string& allowed) {
  throw DeckError("invalid value '" + v + "' for " + key + ": expected " + allowed);
}

long long parse_int(const std::string& key, const std::string& v, long long lo, long long hi) {
  if (const auto x = parse_integer(v, lo, hi)) return *x;
  bad_value(key, v, "an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
}

std::string fmt(double x) {
  std::ostringstream s;
  s << x;
  return s.str();
}

double parse_float(const std::string& key, const std::string& v, double lo, double hi) {
  if (const auto x = parse_real(v, lo, hi)) return *x;
  bad_value(key, v, "a number in [" + fmt(lo) + ", " + fmt(hi) + "]");
}

template <typename E>
E parse_choice(const std::string& key, const std::string& v) {
  if (const auto x = choice_of<E>(v)) return *x;
  bad_value(key, v, "one of " + std::string(choice_names<E>));
}

// Strings are written back into the resolved deck (deck.ini, checkpoints), so
// they may not hold what the INI reader would cut or split there.
std::string parse_string(const std::string& key, const std::string& v) {
  if (v.find_first_of("#;\r\n") != std::string::npos || v.find('\0') != std::string::npos)
    bad_value(key, v, "text without '#', ';' or line breaks");
  return v;
}

// A run writes into <run.out_dir>/<run.name>: a name that is not one path
// component ("../x", "/abs", "a/b", ".", "..", "") would write outside that
// directory or straight into it.
std::string parse_run_name(const std::string& key, const std::string& v) {
  parse_string(key, v);
  if (v.empty() || v == "." || v == ".." || v.find('/') != std::string::npos)
    bad_value(key, v, "one path component (a non-empty directory name without '/', not '.' or '..')");
  return v;
}

constexpr size_t kMaxListItems = 1024;

std::vector<int> parse_list(const std::string& key, const std::string& v, int lo, int hi) {
  std::vector<int> out;
  std::stringstream ss(v);
  std::string item;
  while (std::getline(ss, item, ',')) {
    item.erase(0, item.find_first_not_of(" \t"));
    item.erase(item.find_last_not_of(" \t") + 1);
    const auto x = parse_integer(item, lo, hi);
    if (!x) bad_value(key, v, "a comma-separated list of integers in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
    out.push_back(int(*x));
    if (out.size() > kMaxListItems) bad_value(key, v.substr(0, 40) + "...", "at most " + std::to_string(kMaxListItems) + " items");
  }
  if (out.empty()) bad_value(key, v, "a non-empty comma-separated list of integers");
  return out;
}

constexpr long long kBig = 1LL << 40;

// The upper bound is at most what the field holds: a larger value is refused
// instead of being cut to the field's width (2^32 + 20 steps would train 20).
template <typename T>
constexpr long long field_max(long long hi) {
  return std::cmp_less(std::numeric_limits<T>::max(), hi) ? static_cast<long long>(std::numeric_limits<T>::max()) : hi;
}

#define K_INT(NAME, FIELD, DEF, LO, HI, HELP)                                                 \
  DeckKey{NAME, "int", DEF, HELP, [](Deck& d, const std::string& v) {                         \
            using T = decltype(d.FIELD);                                                      \
            d.FIELD = T(parse_int(NAME, v, LO, field_max<T>(HI)));                            \
          }}
#define K_FLOAT(NAME, FIELD, DEF, LO, HI, HELP) \
  DeckKey{NAME, "float", DEF, HELP, [](Deck& d, const std::string& v) { d.FIELD = parse_float(NAME, v, LO, HI); }}
#define K_STR(NAME, FIELD, DEF, HELP) \
  DeckKey{NAME, "string", DEF, HELP, [](Deck& d, const std::string& v) { d.FIELD = parse_string(NAME, v); }}
#define K_CHOICE(NAME, FIELD, DEF, HELP)                                                     \
  DeckKey{NAME, std::string(choice_names<decltype(Deck::FIELD)>), DEF, HELP,                  \
          [](Deck& d, const std::string& v) { d.FIELD = parse_choice<decltype(d.FIELD)>(NAME, v); }}
#define K_LIST(NAME, FIELD, DEF, LO, HI, HELP) \
  DeckKey{NAME, "list", DEF, HELP, [](Deck& d, const std::string& v) { d.FIELD = parse_list(NAME, v, LO, HI); }}

std::vector<DeckKey> make_keys() {
  return {
      DeckKey{"run.name", "string", "quickstart", "run name; output goes to <out_dir>/<name>",
              [](Deck& d, const std::string& v) { d.run.name = parse_run_name("run.name", v); }},
      K_STR("run.out_dir", run.out_dir, "runs", "directory that holds run directories"),
      K_CHOICE("run.device", run.device, "cpu", "where kernels run (cuda: one GPU per rank)"),
      K_CHOICE("run.path_allreduce", run.path_allreduce, "auto",
               "how the ranks of one path sum their gradients (replica_mode = data): auto is NCCL on the GPUs where "
               "run.device = cuda and every rank can load libnccl.so.2 (one GPU each), else MPI through host memory"),
      K_INT("run.seed", run.seed, "1234", 0, kBig, "seed for initialisation, data order and faults").at(DeckStage::warm_start),
      K_INT("run.threads", run.threads, "0", 0, 1024, "OpenMP threads per rank (0: OMP_NUM_THREADS, else the node's cores shared by its ranks)"),
      K_INT("run.log_every", run.log_every, "10", 1, kBig, "inner steps between progress lines"),
      K_STR("run.restart", run.restart, "auto", "auto (resume from the run directory's latest checkpoint), never, or a checkpoint path"),
      K_INT("run.restart_force", run.restart_force, "0", 0, 1, "1: resume even when shape or topology keys differ from the checkpoint's deck"),
      K_INT("run.stop_after", run.stop_after, "0", 0, kBig, "stop cleanly with a checkpoint after this many inner steps in this session (0: no limit)"),
      K_FLOAT("run.max_hours", run.max_hours, "0", 0, 1e6, "stop cleanly with a checkpoint after this many hours (0: no limit)"),
      K_FLOAT("run.collective_timeout", run.collective_timeout, "300", 1, 1e6, "seconds a collective may wait for a peer before the job aborts"),

      K_STR("data.corpus", data.corpus, "inputs/corpus/embedded.jsonl",
            "training text: a JSONL file (plain, .gz or .zst; a text key, optional id and domain), a comma-separated list, "
            "a glob or a directory of them; or token files: Megatron PREFIX (.bin + .idx), llm.c shards").at(DeckStage::prepare),
      K_STR("data.val", data.val, "", "validation text in the same forms (empty: data.val_fraction of data.corpus, by hash of id)").at(DeckStage::prepare),
      K_STR("data.domain_key", data.domain_key, "",
            "JSON key holding a document's domain (empty: the key domain when present, else the file's name)").at(DeckStage::prepare),
      K_FLOAT("data.piece_mb", data.piece_mb, "64", 0.001, 1e6,
              "plain input files are read in pieces of about this many MB, shared out over the ranks (compressed files whole)").at(DeckStage::prepare),
      K_INT("data.eot_token", data.eot_token, "-1", -1, 2147483647,
            "token inputs' end-of-text id (-1: the format's own: 50256 in GPT-2 llm.c shards, 128000 in Llama 3 ones; "
            "Megatron: a new id past the largest, or a document's last token when it equals this)").at(DeckStage::prepare),
      K_CHOICE("data.tokenizer", data.tokenizer, "bytes",
               "how text becomes tokens: bytes (vocabulary 256), or a SentencePiece model encoding it at prepare").at(DeckStage::prepare),
      K_STR("data.tokenizer_model", data.tokenizer_model, "",
            "a SentencePiece .model (empty with data.tokenizer = sentencepiece: one is trained at prepare on the training text)").at(DeckStage::prepare),
      K_INT("data.tokenizer_vocab", data.tokenizer_vocab, "4000", 300, 1 << 20, "ids of a tokenizer trained at prepare").at(DeckStage::prepare),
      K_CHOICE("data.tokenizer_type", data.tokenizer_type, "unigram", "the kind of tokenizer trained at prepare").at(DeckStage::prepare),
      K_FLOAT("data.tokenizer_sample_mb", data.tokenizer_sample_mb, "20", 0.01, 1e5,
              "MB of training text (documents chosen by a hash of the id) a tokenizer is trained on").at(DeckStage::prepare),
      K_STR("data.decode_table", data.decode_table, "",
            "token files: llm.c's tokenizer file (each id's bytes), so that losses are bits per byte, not per token").at(DeckStage::prepare),
      K_STR("data.store", data.store, "", "directory of the token store prepare writes (empty: RUN_DIR/store)").at(DeckStage::prepare),
      K_FLOAT("data.val_fraction", data.val_fraction, "0.1", 0.0, 0.9, "share of documents held out for validation (by hash of id)").at(DeckStage::prepare),
      K_INT("data.min_val_docs", data.min_val_docs, "2", 0, kBig, "minimum validation documents per domain").at(DeckStage::prepare),

      K_INT("model.d_model", model.d_model, "128", 8, 65536, "width of the residual stream").at(DeckStage::warm_start).shaping(),
      K_INT("model.n_layers", model.n_layers, "4", 1, 1024, "transformer blocks").at(DeckStage::warm_start).shaping(),
      K_INT("model.n_heads", model.n_heads, "4", 1, 1024, "attention heads (must divide d_model)").at(DeckStage::warm_start).shaping(),
      K_INT("model.context", model.context, "128", 2, 65536, "sequence length T in tokens (bytes for a byte-level corpus)").at(DeckStage::warm_start).shaping(),
      K_INT("model.vocab_size", model.vocab_size, "0", 0, 1 << 24,
            "token ids the embedding and head hold (0: the data's own: 256 for bytes, the largest id + 1 for token inputs)").at(DeckStage::warm_start),
      K_LIST("model.layers_per_level", model.layers_per_level, "0", 0, 1024, "blocks per level, summing to n_layers (0: one level with all blocks)").at(DeckStage::warm_start).shaping(),

      K_INT("train.steps", train.steps, "400", 0, kBig, "inner steps per path").at(DeckStage::train),
      K_INT("train.batch_size", train.batch_size, "16", 1, 1 << 20, "sequences per step per path (split over the path's ranks)").at(DeckStage::warm_start),
      K_INT("train.micro_batch", train.micro_batch, "0", 0, 1 << 20,
            "sequences per fixed micro-batch, summed exactly over a path's ranks: the same weights at any rank count "
            "(0: the batch split over the path's ranks, summed in fp32)").at(DeckStage::warm_start),
      K_FLOAT("train.lr", train.lr, "3e-3", 0, 10, "peak AdamW learning rate").at(DeckStage::warm_start),
      K_FLOAT("train.min_lr_ratio", train.min_lr_ratio, "0.1", 0, 1, "final learning rate as a fraction of the peak (cosine decay)").at(DeckStage::warm_start),
      K_INT("train.warmup", train.warmup, "40", 0, kBig, "linear warm-up steps").at(DeckStage::warm_start),
      K_FLOAT("train.weight_decay", train.weight_decay, "0.1", 0, 10, "decoupled weight decay (not on gains and biases)").at(DeckStage::warm_start),
      K_FLOAT("train.beta1", train.beta1, "0.9", 0, 0.999999, "AdamW beta1").at(DeckStage::warm_start),
      K_FLOAT("train.beta2", train.beta2, "0.95", 0, 0.999999, "AdamW beta2").at(DeckStage::warm_start),
      K_FLOAT("train.eps", train.eps, "1e-8", 1e-30, 1, "AdamW epsilon").at(DeckStage::warm_start),
      K_FLOAT("train.grad_clip", train.grad_clip, "1.0", 0, 1e9, "global gradient-norm clip (0: off)").at(DeckStage::warm_start),
      K_CHOICE("train.precision", train.precision, "fp32",
               "matmul precision (bf16: bf16 inputs, fp32 accumulation; weights stay fp32; tf32: fp32 inputs "
               "rounded to tf32 on CUDA tensor cores, the same as fp32 on the CPU)").at(DeckStage::warm_start),
      K_FLOAT("train.diverge_factor", train.diverge_factor, "4", 0, 1e9,
              "a step diverges when its loss or gradient norm is not finite, or its loss is above this many times "
              "the path's running mean loss (0: only non-finite values)"),
      K_INT("train.diverge_limit", train.diverge_limit, "3", 0, kBig,
            "divergences a path may have (each: back to its anchors, the batch skipped, left out of its outer round) "
            "before the job ends with exit code 5; a path without anchors (dense, warm start) ends it at the first"),
      K_CHOICE("train.early_stop", train.early_stop, "none",
               "path: each path ends on its weights with the best bpb on its own validation shard").at(DeckStage::train),

      K_CHOICE("route.method", route.method, "hash",
               "how documents reach paths: hash of the id, domain label, or k-means on prefix features").at(DeckStage::route),
      K_CHOICE("route.routing", route.routing, "product",
               "kmeans: one k-means per level on its slice of the features (product), one per level on what the "
               "levels above leave (residual: level 0 on the features, level 1 on feature minus level-0 centroid), "
               "one with P centroids (flat), or flat with its clusters placed on the modules so that near "
               "clusters share them (factorised)").at(DeckStage::route),
      K_INT("route.prefix_tokens", route.prefix_tokens, "32", 1, 65536, "leading tokens of a document whose features route it (not scored in evaluation)").at(DeckStage::route),
      K_INT("route.warm_steps", route.warm_steps, "0", 0, kBig, "steps of the dense warm-start model that every path starts from and whose features route (0: none)").at(DeckStage::warm_start),
      K_STR("route.warm_start", route.warm_start, "", "file of the warm-start weights, shareable between runs (\"\": <run dir>/warmstart.h5)"),
      K_INT("route.kmeans_iters", route.kmeans_iters, "100", 1, 100000, "cap on Lloyd iterations").at(DeckStage::route),
      K_INT("route.fit_docs", route.fit_docs, "100000", 1, kBig,
            "k-means is fit on about this many training documents, chosen by a hash of their id (all when fewer)").at(DeckStage::route),
      K_FLOAT("route.max_shard_fraction", route.max_shard_fraction, "1", 0, 1, "largest share of the training documents one shard may take (overflow: next-nearest path)").at(DeckStage::route),
      K_FLOAT("route.min_shard_fraction", route.min_shard_fraction, "0", 0, 1,
              "fewest of the training documents a shard must take, as a share (underflow: the documents nearest to it "
              "from larger shards)").at(DeckStage::route),
      K_INT("route.overlap", route.overlap, "1", 1, 4096, "each training document goes to its k nearest paths").at(DeckStage::route),
      K_INT("route.em_rounds", route.em_rounds, "0", 0, 1000,
            "re-shardings during training: documents move to the path with the lowest loss, the router is refit").at(DeckStage::train),
      K_INT("route.segment_tokens", route.segment_tokens, "0", 0, 1 << 20,
            "segment shards: training documents cut every N tokens after the routing prefix, as re-routing cuts them, "
            "each segment training the path that the window before it picks (the windows router, balanced so that each path's "
            "segments add up to about its documents' tokens; 0: whole documents)").at(DeckStage::train),
      K_INT("route.segment_window", route.segment_window, "0", 0, 1 << 20,
            "segment shards: tokens of the window before a segment whose features pick its path (0: route.prefix_tokens)").at(DeckStage::train),
      K_FLOAT("route.segment_margin", route.segment_margin, "0", 0, 1e6,
              "segment shards: a segment stays on its document's own path unless another path's window score is lower by "
              "more than this, in units of the mean squared distance between nearest centroids (0: the nearest path; "
              "large: whole documents; needs route.overlap = 1)").at(DeckStage::train),
      K_CHOICE("route.refit", route.refit, "centroid",
               "re-sharding: the router refit to the new shards (nearest centroid, or logistic regression on the features)").at(DeckStage::train),
      K_INT("route.em_candidates", route.em_candidates, "4", 0, 4096,
            "re-sharding: paths whose loss is measured per document, the nearest by the router (0: all)").at(DeckStage::train),

      K_LIST("dipaco.modules_per_level", dipaco.modules_per_level, "1", 1, 4096, "modules per level; paths = their product (1: dense)").at(DeckStage::route).shaping(),
      DeckKey{"dipaco.private_levels", "list|none", "none",
              "levels whose modules are private to each path: one module per path, never averaged across paths "
              "(replica_mode = diloco: averaged across the path's replicas); none: every level shared",
              [](Deck& d, const std::string& v) {
                d.dipaco.private_levels.clear();
                if (v != "none") d.dipaco.private_levels = parse_list("dipaco.private_levels", v, 0, 1023);
              }}.at(DeckStage::train).shaping(),
      K_INT("dipaco.inner_steps", dipaco.inner_steps, "0", 0, kBig, "H, inner steps per outer round (0: no outer rounds, plain training)").at(DeckStage::train),
      K_FLOAT("dipaco.outer_lr", dipaco.outer_lr, "0.7", 0, 10, "outer SGD learning rate").at(DeckStage::train),
      K_INT("dipaco.outer_warmup", dipaco.outer_warmup, "0", 0, kBig,
            "outer rounds over which the outer lr grows linearly: round r (from 0) uses outer_lr * min(1, (r + 1) / "
            "outer_warmup) (0: the full outer lr from the first round)").at(DeckStage::train),
      K_FLOAT("dipaco.outer_momentum", dipaco.outer_momentum, "0.9", 0, 0.999999, "outer Nesterov momentum").at(DeckStage::train),
      K_CHOICE("dipaco.shared", dipaco.shared, "embeddings",
               "groups shared by all paths: embeddings (tokens, positions, final norm) or none (private)").at(DeckStage::train).shaping(),
      K_CHOICE("dipaco.sharing_scale", dipaco.sharing_scale, "none",
               "a module's averaged outer gradient times sqrt(k), k the paths sharing it: none, sqrt, or capped (sqrt(k) at most, "
               "and never past the mean norm of the k paths' own outer gradients: updates that agree get no boost)").at(DeckStage::train),
      K_CHOICE("dipaco.replica_mode", dipaco.replica_mode, "data",
               "the R/P ranks of a path: data (gradient all-reduce every step) or diloco (independent workers, averaged every H steps)").at(DeckStage::train),
      K_CHOICE("dipaco.outer_dtype", dipaco.outer_dtype, "fp32",
               "type outer gradients travel in: fp32 (an exact int64 fixed-point all-reduce), or bf16, int8, fp4 "
               "(int8 and fp4 with a scale per 128 values) through a ring re-encoding at every hop, summed in fp32").at(DeckStage::train),
      K_INT("dipaco.overlap_steps", dipaco.overlap_steps, "0", 0, kBig,
            "tau: an outer round's sums travel while the paths train tau more steps, then each path takes the new "
            "anchor plus what it learnt in those steps (0: the paths wait for the sums; needs outer_dtype bf16|int8|fp4 "
            "and tau < inner_steps)").at(DeckStage::train),
      K_CHOICE("dipaco.error_feedback", dipaco.error_feedback, "on",
               "bf16/int8/fp4 outer gradients: each path keeps what encoding lost and adds it to its next outer gradient "
               "(kept in checkpoints)").at(DeckStage::train),

      K_INT("checkpoint.every", checkpoint.every, "0", 0, kBig, "inner steps between checkpoints (0: only at the end)"),
      K_INT("checkpoint.keep", checkpoint.keep, "2", 1, 1000, "checkpoints kept in the run directory"),

      K_INT("eval.every", eval.every, "100", 0, kBig, "inner steps between validation evaluations (0: only at the end)").at(DeckStage::train),
      K_INT("eval.batches", eval.batches, "8", 1, 1 << 20, "validation batches of train.batch_size sequences per evaluation").at(DeckStage::train),
      K_INT("eval.reroute_every", eval.reroute_every, "0", 0, 1 << 20,
            "routed evaluation: re-route every N tokens by the preceding prefix_tokens (0: once per document)").at(DeckStage::evaluate),
      K_CHOICE("eval.reroute_router", eval.reroute_router, "windows",
               "what re-routes a segment: windows (each path's mean feature of the windows re-routing reads in its "
               "own training documents; on segment shards cut every reroute_every by the same window, the router that cut "
               "them, else one balanced the same way) or starts "
               "(the route's k-means, fit on document starts)").at(DeckStage::evaluate),
      K_INT("eval.reroute_window", eval.reroute_window, "0", 0, 1 << 20,
            "re-routing: tokens of the window before a segment whose features pick its path (0: route.prefix_tokens; "
            "another length needs reroute_router = windows)").at(DeckStage::evaluate),
      K_FLOAT("eval.reroute_margin", eval.reroute_margin, "-1", -1, 1e6,
              "re-routing: a segment stays on its document's path unless another path's window score is lower by more "
              "than this, in units of the mean squared distance between nearest centroids (needs reroute_router = windows; "
              "-1: route.segment_margin)").at(DeckStage::evaluate),
      K_INT("eval.doc_bytes", eval.doc_bytes, "1024", 2, 1 << 30, "routed evaluation: leading bytes of each validation document it reads").at(DeckStage::evaluate),

      K_FLOAT("fault.drop_outer_prob", fault.drop_outer_prob, "0", 0, 1, "probability that a path's outer gradient is dropped from a round").at(DeckStage::train),
      K_STR("fault.kill_at", fault.kill_at, "",
            "tests: PHASE:N kills rank fault.kill_rank the N-th time it reaches PHASE (prepare|warm_start|route|inner|outer_allreduce|checkpoint|eval)"),
      K_INT("fault.kill_rank", fault.kill_rank, "0", 0, 1 << 30, "tests: the rank fault.kill_at kills"),
      K_CHOICE("fault.kill_target", fault.kill_target, "rank",
               "tests: fault.kill_at kills the rank, or mpirun and then the rank, or stops the rank (SIGSTOP: a hung peer)"),
      K_FLOAT("fault.step_delay", fault.step_delay, "0", 0, 60, "tests: seconds every inner step sleeps (a run that lives long enough to be stopped)"),
      K_INT("fault.slow_path", fault.slow_path, "-1", -1, kMaxPaths, "benchmarks: this path is a straggler (-1: none)"),
      K_FLOAT("fault.slow_factor", fault.slow_factor, "2", 1, 100,
              "benchmarks: the straggler's inner steps take this many times as long (it sleeps in proportion)"),
      K_INT("fault.diverge_path", fault.diverge_path, "-1", -1, kMaxPaths,
            "tests: this path's loss is NaN at the inner steps fault.diverge_steps (-1: none)").at(DeckStage::train),
      K_LIST("fault.diverge_steps", fault.diverge_steps, "0", 0, 1 << 30,
             "tests: the inner steps (from 1) at which fault.diverge_path's loss is NaN").at(DeckStage::train),
      K_INT("fault.slow_moves", fault.slow_moves, "0", 0, kBig,
            "benchmarks: the straggler moves to the next path every this many inner steps (0: it stays)")
  };
}

// Line of each "section.key" in an INI file, and keys found outside a section.
struct IniScan {
  std::map<std::string, int> line_of;
};

IniScan scan_ini(const std::string& file, std::istream& in) {
  IniScan scan;
  std::string line, section;
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    auto hash = line.find_first_of("#;");
    if (hash != std::string::npos) line.resize(hash);
    line.erase(0, line.find_first_not_of(" \t\r"));
    line.erase(line.find_last_not_of(" \t\r") + 1);
    if (line.empty()) continue;
    if (line.front() == '[') {
      if (line.back() != ']') throw DeckError(file + ":" + std::to_string(n) + ": malformed section header '" + line + "'");
      section = line.substr(1, line.size() - 2);
      continue;
    }
    auto eq = line.find('=');
    if (eq == std::string::npos)
      throw DeckError(file + ":" + std::to_string(n) + ": expected 'key = value', got '" + line + "'");
    std::string key = line.substr(0, eq);
    key.erase(key.find_last_not_of(" \t") + 1);
    scan.line_of[section.empty() ? key : section + "." + key] = n;
  }
  return scan;
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1])});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::string unknown_key_message(const std::string& where, const std::string& key) {
  std::string msg = where + "unknown key '" + key + "'";
  std::string close = closest_key(key);
  if (!close.empty()) msg += " (did you mean " + close + "?)";
  return msg + "; see 'dipaco --help' for all keys";
}

}  // namespace

const std::vector<DeckKey>& deck_keys() {
  static const std::vector<DeckKey> keys = make_keys();
  return keys;
}

const DeckKey& deck_key(const std::string& name) {
  static const std::map<std::string, const DeckKey*> by_name = [] {
    std::map<std::string, const DeckKey*> m;
    for (const auto& k : deck_keys()) m[k.name] = &k;
    return m;
  }();
  const auto it = by_name.find(name);
  if (it == by_name.end()) throw DeckError("unknown deck key " + name);
  return *it->second;
}

std::string closest_key(const std::string& name) {
  // A match needs distance <= max(3, n/3), so names over 1.5x the longest key
  // (24 characters) match nothing: skip the quadratic distance for long text.
  if (name.size() > 64) return "";
  std::string best;
  size_t best_d = std::numeric_limits<size_t>::max();
  for (const auto& k : deck_keys()) {
    size_t d = edit_distance(name, k.name);
    // A key whose part after the section matches is close too ("lr" -> "train.lr").
    auto dot = k.name.find('.');
    d = std::min(d, edit_distance(name, k.name.substr(dot + 1)) + 1);
    if (d < best_d) best_d = d, best = k.name;
  }
  return best_d <= std::max<size_t>(3, name.size() / 3) ? best : "";
}

Override split_override(const std::string& arg) {
  const size_t from = arg.rfind("--", 0) == 0 ? 2 : 0;
  const size_t eq = arg.find('=', from);
  if (eq == std::string::npos) return {arg.substr(from), "", false};
  return {arg.substr(from, eq - from), arg.substr(eq + 1), true};
}

Deck load_deck(const std::string& file, const std::vector<std::string>& overrides) {
  return load_deck_source(file, nullptr, overrides);
}

Deck load_deck_text(const std::string& text, const std::string& name, const std::vector<std::string>& overrides) {
  return load_deck_source(name, &text, overrides);
}

Deck with_overrides(const Deck& deck, const std::vector<std::string>& overrides) {
  const std::string text = deck.text();
  Deck out = load_deck_source(deck.source, &text, overrides);
  out.source = deck.source;
  return out;
}

namespace {

// Command-line overrides as Boost arguments. Boost keeps the first value
// stored for a key, so the last override of a key replaces earlier ones (as
// users of command lines expect). Boost refuses "--key=" (an empty value), yet
// "" is a text key's documented default (route.warm_start): keys given empty
// go to `empty`, set past Boost.
std::vector<std::string> override_args(const std::vector<std::string>& overrides, std::set<std::string>& empty) {
  std::vector<Override> last;
  std::map<std::string, size_t> slot;
  for (const auto& a : overrides) {
    Override o = split_override(a);
    if (auto [it, fresh] = slot.try_emplace(o.key, last.size()); fresh) last.push_back(std::move(o));
    else last[it->second] = std::move(o);
  }
  std::vector<std::string> args;
  for (const auto& o : last) {
    if (o.has_value && o.value.empty()) {
      bool known = std::any_of(deck_keys().begin(), deck_keys().end(), [&](const DeckKey& k) { return k.name == o.key; });
      if (!known) throw DeckError(unknown_key_message("command line: ", o.key));
      empty.insert(o.key);
    } else {
      args.push_back("--" + o.key + (o.has_value ? "=" + o.value : ""));
    }
  }
  return args;
}

void store_overrides(const std::vector<std::string>& args, const po::options_description& desc, po::variables_map& vm) {
  try {
    // No guessing: Boost would take --train.warm for train.warmup; a key is named in full or refused.
    const int style = po::command_line_style::default_style & ~po::command_line_style::allow_guessing;
    auto parsed = po::command_line_parser(args).options(desc).style(style).allow_unregistered().run();
    for (const auto& o : parsed.options)
      if (o.unregistered) {
        std::string key = o.string_key.empty() && !o.original_tokens.empty() ? o.original_tokens[0] : o.string_key;
        throw DeckError(unknown_key_message("command line: ", key));
      }
    po::store(parsed, vm);
  } catch (const po::error& e) {
    throw DeckError(std::string("command line: ") + e.what());
  }
}

// The deck file (or text): unknown keys named with their line.
void store_deck_file(const std::string& file, const std::string* text, const po::options_description& desc,
                     po::variables_map& vm) {
  std::ifstream file_in;
  std::istringstream text_in(text ? *text : std::string());
  if (!text) {
    // A directory opens as a stream and reads as an empty deck: refuse it, and
    // anything else that is not a regular file (the reader rewinds the file).
    std::error_code ec;
    if (std::filesystem::is_directory(file, ec)) throw DeckError("deck '" + file + "' is a directory, not a deck file");
    file_in.open(file);
    if (!file_in) throw DeckError("cannot open deck file '" + file + "'");
    if (!std::filesystem::is_regular_file(file, ec)) throw DeckError("deck '" + file + "' is not a regular file");
  }
  std::istream& in = text ? static_cast<std::istream&>(text_in) : file_in;
  IniScan scan = scan_ini(file, in);
  in.clear();
  in.seekg(0);
  try {
    auto parsed = po::parse_config_file(in, desc, true);
    for (const auto& o : parsed.options)
      if (o.unregistered) {
        const int line = scan.line_of.count(o.string_key) ? scan.line_of[o.string_key] : 0;
        throw DeckError(unknown_key_message(file + ":" + std::to_string(line) + ": ", o.string_key));
      }
    po::store(parsed, vm);
  } catch (const po::multiple_occurrences& e) {
    throw DeckError(file + ": a key is given twice: " + e.get_option_name());
  } catch (const po::error& e) {
    throw DeckError(file + ": " + e.what());
  }
}

// model.layers_per_level against model.n_layers and dipaco.modules_per_level.
// Returns the number of paths (the product of dipaco.modules_per_level).
long check_levels(Deck& deck) {
  auto& m = deck.model;
  if (m.layers_per_level.size() == 1 && m.layers_per_level[0] == 0) m.layers_per_level = {m.n_layers};
  int sum = 0;
  for (int x : m.layers_per_level) {
    if (x <= 0) throw DeckError("model.layers_per_level = " + deck.values["model.layers_per_level"] + ": every level needs at least one block");
    sum += x;
  }
  if (sum != m.n_layers)
    throw DeckError("model.layers_per_level = " + deck.values["model.layers_per_level"] + " sums to " + std::to_string(sum) +
                    " blocks, but model.n_layers = " + std::to_string(m.n_layers));
  if (deck.dipaco.modules_per_level.size() != m.layers_per_level.size()) {
    const bool dense = deck.dipaco.modules_per_level == std::vector<int>{1};
    if (!dense)
      throw DeckError("dipaco.modules_per_level = " + deck.values["dipaco.modules_per_level"] + " has " +
                      std::to_string(deck.dipaco.modules_per_level.size()) + " levels but model.layers_per_level = " +
                      deck.values["model.layers_per_level"] + " has " + std::to_string(m.layers_per_level.size()));
    deck.dipaco.modules_per_level.assign(m.layers_per_level.size(), 1);
  }
  auto& priv = deck.dipaco.private_levels;
  std::sort(priv.begin(), priv.end());
  for (size_t i = 0; i < priv.size(); ++i) {
    if (priv[i] >= int(m.layers_per_level.size()))
      throw DeckError("dipaco.private_levels = " + deck.values["dipaco.private_levels"] + ": level " + std::to_string(priv[i]) +
                      " does not exist (levels 0.." + std::to_string(m.layers_per_level.size() - 1) + ")");
    if (i > 0 && priv[i] == priv[i - 1])
      throw DeckError("dipaco.private_levels = " + deck.values["dipaco.private_levels"] + ": level " + std::to_string(priv[i]) +
                      " is given twice");
  }
  long paths = 1;
  for (int x : deck.dipaco.modules_per_level)
    if ((paths *= x) > kMaxPaths)
      throw DeckError("dipaco.modules_per_level = " + deck.values["dipaco.modules_per_level"] + " gives more than " +
                      std::to_string(kMaxPaths) + " paths");
  return paths;
}

// Checks that involve more than one key.
void check_cross_keys(Deck& deck) {
  const auto& m = deck.model;
  if (m.d_model % m.n_heads != 0)
    throw DeckError("model.n_heads = " + std::to_string(m.n_heads) + " must divide model.d_model = " + std::to_string(m.d_model));
  const long paths = check_levels(deck);
  if (deck.train.micro_batch > 0 && deck.train.batch_size % deck.train.micro_batch != 0)
    throw DeckError("train.micro_batch = " + std::to_string(deck.train.micro_batch) + " must divide train.batch_size = " +
                    std::to_string(deck.train.batch_size));
  if (deck.dipaco.replica_mode == ReplicaMode::diloco && deck.dipaco.inner_steps == 0)
    throw DeckError("dipaco.replica_mode = diloco needs dipaco.inner_steps > 0 (the replicas meet only in outer rounds)");
  if (deck.route.em_rounds > 0 && deck.route.method != RouteMethod::kmeans)
    throw DeckError("route.em_rounds needs route.method = kmeans (re-routing refits the router)");
  if (const auto& r = deck.route; r.min_shard_fraction > 0) {
    if (r.min_shard_fraction * double(paths) > 1 + 1e-9 || r.min_shard_fraction > r.max_shard_fraction)
      throw DeckError("route.min_shard_fraction = " + deck.values["route.min_shard_fraction"] + " must be at most 1/paths = 1/" +
                      std::to_string(paths) + " and at most route.max_shard_fraction = " + deck.values["route.max_shard_fraction"]);
  }
  if (const auto& r = deck.route; r.segment_tokens > 0) {
    if (r.method != RouteMethod::kmeans)
      throw DeckError("route.segment_tokens needs route.method = kmeans (a segment's window is routed by features)");
    if (r.em_rounds > 0)
      throw DeckError("route.segment_tokens and route.em_rounds cannot be combined (re-sharding by loss moves whole documents)");
    if (r.segment_margin > 0 && r.overlap != 1)
      throw DeckError("route.segment_margin = " + deck.values["route.segment_margin"] + " needs route.overlap = 1 (a "
                      "segment stays on its document's one path)");
  } else if (r.segment_window > 0) {
    throw DeckError("route.segment_window = " + std::to_string(r.segment_window) + " needs route.segment_tokens > 0");
  } else if (r.segment_margin > 0) {
    throw DeckError("route.segment_margin = " + deck.values["route.segment_margin"] + " needs route.segment_tokens > 0");
  }
  if (const auto& e = deck.eval; e.reroute_margin > 0 && e.reroute_router == RerouteRouter::starts)
    throw DeckError("eval.reroute_margin = " + deck.values["eval.reroute_margin"] + " needs eval.reroute_router = windows");
  if (deck.route.segment_window > deck.model.context)
    throw DeckError("route.segment_window = " + std::to_string(deck.route.segment_window) + " must be at most model.context = " +
                    std::to_string(deck.model.context));
  if (deck.eval.reroute_window > deck.model.context)
    throw DeckError("eval.reroute_window = " + std::to_string(deck.eval.reroute_window) + " must be at most model.context = " +
                    std::to_string(deck.model.context));
  if (const auto& e = deck.eval; e.reroute_window > 0 && e.reroute_window != deck.route.prefix_tokens &&
                                  e.reroute_router == RerouteRouter::starts)
    throw DeckError("eval.reroute_window = " + std::to_string(e.reroute_window) + " needs eval.reroute_router = windows "
                    "(the route's k-means is fit on features of route.prefix_tokens = " +
                    std::to_string(deck.route.prefix_tokens) + " tokens)");
  if (deck.run.path_allreduce == PathAllreduce::nccl && deck.run.device != Device::cuda)
    throw DeckError("run.path_allreduce = nccl needs run.device = cuda (NCCL sums GPU memory)");
  if (const auto& d = deck.dipaco; d.overlap_steps > 0) {
    if (d.outer_dtype == OuterDtype::fp32)
      throw DeckError("dipaco.overlap_steps = " + std::to_string(d.overlap_steps) +
                      " needs dipaco.outer_dtype = bf16, int8 or fp4 (fp32 outer gradients are summed by a blocking all-reduce)");
    if (d.overlap_steps >= d.inner_steps)
      throw DeckError("dipaco.overlap_steps = " + std::to_string(d.overlap_steps) + " must be below dipaco.inner_steps = " +
                      std::to_string(d.inner_steps) + " (a round completes before the next one starts)");
  }
  if (const std::string& k = deck.fault.kill_at; !k.empty()) {
    static const std::vector<std::string> phases = {"prepare", "warm_start", "route", "inner", "outer_allreduce", "checkpoint", "eval"};
    const std::string phase = k.substr(0, k.find(':'));
    const std::string count = k.find(':') == std::string::npos ? "1" : k.substr(k.find(':') + 1);
    if (std::find(phases.begin(), phases.end(), phase) == phases.end() || count.empty() ||
        count.find_first_not_of("0123456789") != std::string::npos || std::atol(count.c_str()) < 1)
      throw DeckError("fault.kill_at = " + k + ": expected PHASE or PHASE:N (N >= 1) with PHASE one of "
                      "prepare, warm_start, route, inner, outer_allreduce, checkpoint, eval");
  }
}

}  // namespace

Deck load_deck_source(const std::string& file, const std::string* text, const std::vector<std::string>& overrides) {
  po::options_description desc;
  for (const auto& k : deck_keys()) desc.add_options()(k.name.c_str(), po::value<std::string>());
  po::variables_map vm;
  std::set<std::string> empty;
  store_overrides(override_args(overrides, empty), desc, vm);  // first: Boost keeps the first value of a key
  if (!file.empty() || text) store_deck_file(file, text, desc, vm);

  Deck deck;
  deck.source = file;
  for (const auto& k : deck_keys()) {
    std::string v = empty.count(k.name) ? "" : vm.count(k.name) ? vm[k.name].as<std::string>() : k.deflt;
    v.erase(0, v.find_first_not_of(" \t\r"));  // \r: decks written on Windows
    v.erase(v.find_last_not_of(" \t\r") + 1);
    k.set(deck, v);
    deck.values[k.name] = v;
  }
  check_cross_keys(deck);
  return deck;
}

std::string Deck::text() const {
  std::ostringstream out;
  std::string section;
  for (const auto& k : deck_keys()) {
    auto dot = k.name.find('.');
    std::string s = k.name.substr(0, dot);
    if (s != section) {
      out << (section.empty() ? "" : "\n") << "[" << s << "]\n";
      section = s;
    }
    out << k.name.substr(dot + 1) << " = " << values.at(k.name) << "\n";
  }
  return out.str();
}

const char* stage_name(DeckStage s) {
  switch (s) {
    case DeckStage::prepare: return "prepare";
    case DeckStage::warm_start: return "warm start";
    case DeckStage::route: return "route";
    case DeckStage::train: return "train";
    case DeckStage::evaluate: return "evaluate";
    case DeckStage::none: break;
  }
  return "none";
}

std::string deck_help() {
  std::ostringstream out;
  std::string section;
  for (const auto& k : deck_keys()) {
    std::string s = k.name.substr(0, k.name.find('.'));
    if (s != section) {
      out << "\n  [" << s << "]\n";
      section = s;
    }
    std::string head = "  --" + k.name + " <" + k.type + ">";
    out << head << std::string(head.size() < 44 ? 44 - head.size() : 1, ' ') << k.help << " (default: " << k.deflt << ")";
    if (k.stage != DeckStage::none) out << " [from stage " << stage_name(k.stage) << (k.shape ? "; a checkpoint's shape" : "") << "]";
    out << "\n";
  }
  return out.str();
}

}  // namespace dipaco
