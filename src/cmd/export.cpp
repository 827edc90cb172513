// One path as a standalone dense model, and what a user does with it:
//   dipaco export CKPT.h5 --path P OUT.h5     write path P's weights + deck
//   dipaco evaluate MODEL.h5                  its validation bits per byte on its own shard
//   dipaco generate MODEL.h5 --prompt "..."   sample bytes from it
// A path's arena already is a dense model's arena (embeddings, then its
// blocks level by level), so exporting copies one buffer.
#include <hdf5.h>
#include <mpi.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <random>

#include "dipaco/cmd/app.hpp"
#include "dipaco/io/checkpoint.hpp"
#include "dipaco/data/corpus.hpp"
#include "dipaco/io/deck.hpp"
#include "dipaco/model/kernels.hpp"
#include "dipaco/data/shards.hpp"
#include "dipaco/train/trainer.hpp"
#include "dipaco/io/h5io.hpp"

namespace fs = std::filesystem;

namespace dipaco {
namespace {

struct ExportedModel {
  std::string source_deck, source;
  long path = 0;
  std::vector<float> params;
};

// The dense deck of one path: the source deck with a single level and module.
Deck dense_deck(const std::string& source_deck, const Args& overrides = {}) {
  Args ov = {"dipaco.modules_per_level=1", "model.layers_per_level=0", "dipaco.inner_steps=0"};
  ov.insert(ov.end(), overrides.begin(), overrides.end());
  return load_deck_text(source_deck, "the model's deck", ov);
}

ExportedModel read_model(const std::string& file) {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  hid_t f = H5Fopen(file.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  if (f < 0) throw DeckError("cannot open model '" + file + "' (write one with dipaco export)");
  ExportedModel m;
  try {
    if (read_attr_string(f, "format") != "dipaco-model") throw CheckpointError(file + " is not an exported dipaco model");
    m.source_deck = read_attr_string(f, "deck");
    m.source = read_attr_string(f, "source_checkpoint");
    m.path = read_attr_scalar<long>(f, "path", H5T_NATIVE_LONG);
    Deck d = dense_deck(m.source_deck);
    m.params.resize(make_layout(model_shape(d)).total);
    read_floats(f, "params", m.params.size(), m.params.data(), file);
  } catch (...) {
    H5Fclose(f);
    throw;
  }
  H5Fclose(f);
  return m;
}

// Runs `body` inside MPI (a singleton job without mpirun is fine).
template <typename F>
int with_mpi(F&& body) {
  int inited = 0;
  MPI_Initialized(&inited);
  if (!inited) MPI_Init(nullptr, nullptr);
  int code = kExitOk;
  try {
    code = body();
  } catch (...) {
    MPI_Finalize();
    throw;
  }
  MPI_Finalize();
  return code;
}

std::string option(const Args& args, size_t& i, const std::string& name) {
  const std::string& a = args[i];
  if (a.rfind(name + "=", 0) == 0) return a.substr(name.size() + 1);
  if (i + 1 >= args.size()) throw DeckError(name + " needs a value");
  return args[++i];
}

// Numeric flags: bad text or a value out of range names the flag (std::stod
// alone would report only "stod").
long int_option(const std::string& name, const std::string& v, long lo, long hi) {
  size_t pos = 0;
  long x = 0;
  try {
    x = std::stol(v, &pos);
  } catch (const std::exception&) {
    pos = 0;
  }
  if (v.empty() || pos != v.size() || x < lo || x > hi)
    throw DeckError(name + " needs an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got '" + v + "'");
  return x;
}

// `allowed` says the range in words, e.g. "[0, 100]".
double number_option(const std::string& name, const std::string& v, double lo, double hi, const std::string& allowed) {
  size_t pos = 0;
  double x = 0;
  try {
    x = std::stod(v, &pos);
  } catch (const std::exception&) {
    pos = 0;
  }
  if (v.empty() || pos != v.size() || !std::isfinite(x) || x < lo || x > hi)
    throw DeckError(name + " needs a number in " + allowed + ", got '" + v + "'");
  return x;
}

}  // namespace

int cmd_export(const Args& args) {
  std::string ckpt, out;
  long path = -1;
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i].rfind("--path", 0) == 0) path = int_option("--path", option(args, i, "--path"), 0, kMaxPaths - 1);
    else if (args[i].rfind("--", 0) == 0) throw DeckError("unknown option '" + args[i] + "' (export takes --path P)");
    else (ckpt.empty() ? ckpt : out) = args[i];
  }
  if (ckpt.empty() || out.empty() || path < 0) throw DeckError("usage: dipaco export CKPT.h5 --path P OUT.h5");
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  std::string deck_text;
  std::vector<float> params;
  {
    H5Id f(H5Fopen(ckpt.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
    if (!f.ok()) throw DeckError("cannot open checkpoint '" + ckpt + "'");
    deck_text = read_attr_string(f, "deck");
    long paths = read_attr_long(open_group(f, "/topology"), "paths", 1, kMaxPaths);
    if (path >= paths)
      throw DeckError("--path " + std::to_string(path) + ": the checkpoint has paths 0.." + std::to_string(paths - 1));
    params.resize(make_layout(model_shape(dense_deck(deck_text))).total);
    read_floats(open_group(f, "/paths/P" + std::to_string(path)), "params", params.size(), params.data(), ckpt);
  }
  Deck d = dense_deck(deck_text);

  hid_t o = H5Fcreate(out.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  if (o < 0) throw CheckpointError("cannot create '" + out + "'");
  try {
    write_attr_string(o, "format", "dipaco-model");
    write_attr_string(o, "deck", deck_text);
    write_attr_string(o, "source_checkpoint", ckpt);
    write_attr_string(o, "dense_deck", d.text());
    write_attr_long(o, "path", path);
    write_floats(o, "params", params.data(), params.size());
  } catch (...) {
    H5Fclose(o);
    throw;
  }
  if (H5Fclose(o) < 0) throw CheckpointError("writing '" + out + "' failed (disk full?)");
  std::printf("exported path %ld of %s (%zu parameters) to %s\n", path, ckpt.c_str(), params.size(), out.c_str());
  return kExitOk;
}

int cmd_evaluate(const Args& args) {
  if (args.size() != 1) throw DeckError("usage: dipaco evaluate MODEL.h5");
  ExportedModel m = read_model(args[0]);
  return with_mpi([&] {
    Deck src = load_deck_text(m.source_deck, "the model's deck");
    Deck d = dense_deck(m.source_deck);
    const int P = path_count(src.dipaco.modules_per_level);
    // The path's own shards: the run's newest shard file (next to its checkpoints), else the rule.
    Split split = split_corpus(read_corpus(src.data.corpus), src.data.val_fraction, src.data.min_val_docs);
    const std::string shard_file = latest_shard_file(fs::path(m.source).parent_path().parent_path().string());
    Assignment ta, va;
    if (!shard_file.empty()) {
      ShardFile sf = read_shard_file(shard_file, split);
      ta = sf.train, va = sf.val;
    } else if (src.route.method != "kmeans") {
      ta = assign_by_rule(split.train, P, src.route.method), va = assign_by_rule(split.val, P, src.route.method);
    } else {
      throw DeckError("the shard file of the run that trained " + args[0] + " is missing (expected next to " + m.source + ")");
    }
    if (int(ta.size()) != P) throw CheckpointError(shard_file + " holds " + std::to_string(ta.size()) + " paths, the model's run had " + std::to_string(P));
    auto train = shards_of(split.train, ta), val = shards_of(split.val, va);
    auto k = make_kernels(d.run.device);
    Trainer t(d, MPI_COMM_WORLD, *k, {train[m.path]}, {val[m.path]}, "", false);
    k->to_device(t.paths()[0].params.get(), m.params.data(), m.params.size() * sizeof(float));
    EvalResult e = t.evaluate();
    std::printf("path %ld: validation bits per byte %.6f on its own shard (%.0f tokens)\n", m.path, e.bpb, e.path_tokens[0]);
    return kExitOk;
  });
}

int cmd_generate(const Args& args) {
  std::string file, prompt = "\n";
  int tokens = 200;
  double temperature = 0.8;
  long seed = 1;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a.rfind("--prompt", 0) == 0) prompt = option(args, i, "--prompt");
    else if (a.rfind("--tokens", 0) == 0) tokens = int(int_option("--tokens", option(args, i, "--tokens"), 0, 1 << 20));
    else if (a.rfind("--temperature", 0) == 0)
      temperature = number_option("--temperature", option(args, i, "--temperature"), 0, 100, "[0, 100] (0: always the likeliest byte)");
    else if (a.rfind("--seed", 0) == 0) seed = int_option("--seed", option(args, i, "--seed"), 0, std::numeric_limits<long>::max());
    else if (a.rfind("--", 0) == 0) throw DeckError("unknown option '" + a + "' (generate takes --prompt, --tokens, --temperature, --seed)");
    else file = a;
  }
  if (file.empty()) throw DeckError("usage: dipaco generate MODEL.h5 --prompt \"...\" [--tokens N] [--temperature T] [--seed S]");
  if (prompt.empty()) prompt = "\n";
  ExportedModel m = read_model(file);
  Deck d = dense_deck(m.source_deck);
  ModelShape s = model_shape(d);
  auto k = make_kernels(d.run.device);
  Model model(*k, s, 1, Precision::fp32);
  DeviceBuffer<float> p(*k, m.params.size());
  k->to_device(p.get(), m.params.data(), m.params.size() * sizeof(float));
  DeviceBuffer<int32_t> tok(*k, s.T), tgt(*k, s.T);
  std::vector<int32_t> window(s.T, 0);
  std::vector<float> probs(s.V);
  std::string text(prompt);
  std::mt19937_64 rng(seed);
  std::printf("%s", prompt.c_str());
  for (int i = 0; i < tokens; ++i) {
    // The last T bytes, left-aligned: causal attention ignores what follows.
    size_t start = text.size() > size_t(s.T) ? text.size() - s.T : 0, len = text.size() - start;
    for (size_t j = 0; j < size_t(s.T); ++j) window[j] = j < len ? uint8_t(text[start + j]) : 0;
    k->to_device(tok.get(), window.data(), window.size() * sizeof(int32_t));
    k->to_device(tgt.get(), window.data(), window.size() * sizeof(int32_t));
    model.forward(p.get(), tok.get(), tgt.get());
    k->to_host(probs.data(), model.probabilities() + (len - 1) * s.V, s.V * sizeof(float));
    // Byte 0 ends a document in training data: never emit it mid-text. Scaling
    // works on log-probabilities less their maximum, so the likeliest byte
    // keeps weight 1 at any temperature (powers of probabilities underflow to
    // all zeros at a low one); temperature 0 takes the likeliest byte.
    int best = 1;
    for (int v = 2; v < s.V; ++v)
      if (probs[v] > probs[best]) best = v;
    int next = best;
    if (temperature > 0) {
      const double top = std::log(std::max(double(probs[best]), 1e-30));
      std::vector<double> w(s.V, 0.0);
      for (int v = 1; v < s.V; ++v) w[v] = std::exp((std::log(std::max(double(probs[v]), 1e-30)) - top) / temperature);
      next = std::discrete_distribution<int>(w.begin(), w.end())(rng);
    }
    text += char(next);
    std::putchar(next);
  }
  std::printf("\n");
  return kExitOk;
}

}  // namespace dipaco
