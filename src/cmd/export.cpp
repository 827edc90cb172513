// Exports anyone can load, and the bits per byte of an export:
//   dipaco export CKPT.h5 --path P OUT.h5   one path as a dense model
//   dipaco export CKPT.h5 --all OUT.h5      every module once, the path table, the router(s)
//   dipaco evaluate MODEL.h5 [--path P] [--text FILE]
// Tensors are datasets by name with their shapes (named_tensors.hpp); the
// hyperparameters are attributes of the file's root. A path's arena is a
// dense model's arena (embeddings, then its blocks level by level).
#include <hdf5.h>
#include <mpi.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "dipaco/cmd/app.hpp"
#include "dipaco/cmd/options.hpp"
#include "dipaco/cmd/trained_model.hpp"
#include "dipaco/data/corpus.hpp"
#include "dipaco/data/token_store.hpp"
#include "dipaco/data/segment_shards.hpp"
#include "dipaco/data/tokenizer.hpp"
#include "dipaco/data/shards.hpp"
#include "dipaco/dist/topology.hpp"
#include "dipaco/io/checkpoint.hpp"
#include "dipaco/io/deck.hpp"
#include "dipaco/io/input_error.hpp"
#include "dipaco/io/h5io.hpp"
#include "dipaco/io/named_tensors.hpp"
#include "dipaco/model/kernels.hpp"
#include "dipaco/train/divergence.hpp"
#include "dipaco/train/trainer.hpp"

namespace fs = std::filesystem;

namespace dipaco {
namespace {

std::string join(const std::vector<int>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
  return s;
}

// What a loader needs without parsing the deck.
void write_hyperparameters(hid_t o, const TrainedModel& m) {
  const ModelShape& s = m.shape;
  write_attr_long(o, "vocab_size", s.V);
  write_attr_long(o, "d_model", s.C);
  write_attr_long(o, "n_layers", s.L);
  write_attr_long(o, "n_heads", s.H);
  write_attr_long(o, "context", s.T);
  write_attr_long(o, "paths", m.paths);
  write_attr_long(o, "prefix_tokens", m.deck.route.prefix_tokens);
  write_attr_string(o, "layers_per_level", join(model_shape(m.deck).layers_per_level));
  write_attr_string(o, "modules_per_level", join(m.deck.dipaco.modules_per_level));
  write_attr_string(o, "shared", name(m.deck.dipaco.shared));
  write_attr_string(o, "architecture",
                    "pre-LayerNorm GPT: x = wte[tok] + wpe[pos]; per block x += attn.proj(attn(ln1(x))), "
                    "x += mlp.proj(gelu_tanh(mlp.fc(ln2(x)))); logits = lnf(x) wte^T; LayerNorm eps 1e-5; "
                    "causal softmax attention scaled by 1/sqrt(C/H); bytes are tokens, byte 0 ends a document");
  write_attr_string(o, "layout", tensor_layout("x.weight") + "; see each dataset's layout attribute");
  write_attr_string(o, "deck", m.deck_text);
  write_attr_string(o, "dense_deck", dense_deck(m.deck_text).text());
  write_attr_string(o, "source_checkpoint", m.source);
}

H5Id make_group(hid_t loc, const std::string& name) {
  H5Id lcpl(H5Pcreate(H5P_LINK_CREATE), H5Pclose);  // "modules/L0.M1" creates "modules" too
  H5Pset_create_intermediate_group(lcpl, 1);
  H5Id g(H5Gcreate2(loc, name.c_str(), lcpl, H5P_DEFAULT, H5P_DEFAULT), H5Gclose);
  if (!g.ok()) throw CheckpointError("cannot create group " + name);
  return g;
}

void write_ints(hid_t loc, const std::string& name, const std::vector<long>& v, std::vector<hsize_t> dims) {
  H5Id space(H5Screate_simple(int(dims.size()), dims.data(), nullptr), H5Sclose);
  H5Id d(H5Dcreate2(loc, name.c_str(), H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Dclose);
  check(d.ok() && v.size() ? H5Dwrite(d, H5T_NATIVE_LONG, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data()) : herr_t(d.ok() ? 0 : -1),
        "writing " + name);
}

void write_plain_floats(hid_t loc, const std::string& name, const std::vector<float>& v, std::vector<hsize_t> dims) {
  H5Id space(H5Screate_simple(int(dims.size()), dims.data(), nullptr), H5Sclose);
  H5Id d(H5Dcreate2(loc, name.c_str(), H5T_IEEE_F32LE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Dclose);
  check(d.ok() ? H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data()) : herr_t(-1), "writing " + name);
}

// /segment_router: a run trained on segment shards re-routes by the windows
// router that cut them (its segments.h5), on /router's features (route's).
void write_segment_router(hid_t o, const TrainedModel& m, const RunRouter& route) {
  RunRouter r;
  try {
    r = load_segment_router(m, route);
  } catch (const InputError&) {  // the weights are still worth exporting
    std::printf("note: the run trained on segment shards, but its segments.h5 is gone: the export carries no "
                "/segment_router, and generate --reroute-every on it will refuse\n");
    return;
  }
  H5Id g = make_group(o, "segment_router");
  write_attr_long(g, "prefix_tokens", r.prefix);
  write_attr_string(g, "scores", "centroids [P, dim], offsets [P]: score_p = |f - c_p|^2 + offset_p, lowest wins, "
                                 "but the path the text was on keeps it while its score is within stay of the lowest");
  write_attr_string(g, "features", "as /router's, over the last prefix_tokens positions before a re-routing point");
  write_attr_string(g, "source", r.shard_file);
  write_windows_router(g, r.router);
}

// /router: the centroids (or logistic weights) and the warm-start model whose
// features they read, as named tensors.
void write_router(hid_t o, const TrainedModel& m, const RunRouter& r) {
  H5Id g = make_group(o, "router");
  write_attr_string(g, "mode", r.router.mode);
  write_attr_long(g, "dim", r.router.dim);
  write_attr_long(g, "prefix_tokens", r.prefix);
  write_attr_string(g, "scores",
                    r.router.mode == "logistic" ? "rows [w, b]: score_p = -(w_p . f + b_p), lowest wins"
                    : r.router.mode == "flat"   ? "centroids_0 [P, dim]: score_p = |f - c_p|^2, lowest wins"
                                                : "centroids_<l> [modules, dim slice of level l]: score = sum over "
                                                  "levels of |f_l - c_l,m_l|^2, lowest wins (level l takes features "
                                                  "[l*dim/levels, (l+1)*dim/levels), the last one the rest)");
  write_attr_string(g, "features",
                    "f = mean over the first prefix_tokens positions of lnf(x) of the model in features/, "
                    "the text's bytes from the window start");
  write_attr_string(g, "source", r.shard_file);
  for (size_t l = 0; l < r.router.centroids.size(); ++l) {
    const auto& c = r.router.centroids[l];
    hsize_t width = r.router.mode == "logistic" ? r.router.dim + 1 : hsize_t(0);
    if (!width) width = r.router.mode == "flat" ? r.router.dim : c.size() / r.router.modules_per_level[l];
    write_plain_floats(g, "centroids_" + std::to_string(l), c, {c.size() / width, width});
  }
  H5Id f = make_group(g, "features");
  write_tensors(f, make_layout(m.shape), r.features_params.data(), TensorSet::all);
}

// Every module once, taken from the first path that holds it; paths that
// share a module hold the same weights after an outer round (the largest
// difference is printed when the run ended elsewhere).
void write_whole(hid_t o, const TrainedModel& m) {
  const Topology topo = make_topology(m.deck.dipaco.modules_per_level, 1, m.deck.dipaco.private_levels);
  const ParamLayout lay = make_layout(model_shape(m.deck));
  // A private level has a module per path: there the table holds the path's own index.
  auto module_of = [&](int p, int l) { return topo.is_private(l) ? p : topo.path_modules(p)[l]; };
  std::vector<long> table;
  for (int p = 0; p < topo.paths; ++p)
    for (int l = 0; l < topo.levels(); ++l) table.push_back(module_of(p, l));
  H5Id t = make_group(o, "topology");
  write_ints(t, "path_table", table, {hsize_t(topo.paths), hsize_t(topo.levels())});
  write_attr_string(t, "path_table_layout",
                    "[paths, levels]: the module of each level a path takes (at a private level, the path's own: its index)");
  write_attr_string(t, "private_levels", join(m.deck.dipaco.private_levels));
  double diff = 0;
  for (int l = 0; l < topo.levels(); ++l)
    for (int mod = 0; mod < (topo.is_private(l) ? topo.paths : topo.modules_per_level[l]); ++mod) {
      const auto holders = topo.is_private(l) ? std::vector<int>{mod} : topo.paths_with_module(l, mod);
      const auto& g = lay.groups[1 + l];
      for (int p : holders)
        for (size_t i = 0; i < g.size; ++i)
          diff = std::max(diff, double(std::fabs(m.params(p)[g.offset + i] - m.params(holders[0])[g.offset + i])));
      H5Id mg = make_group(o, "modules/L" + std::to_string(l) + ".M" + std::to_string(mod));
      write_attr_long(mg, "from_path", holders[0]);
      write_tensors(mg, lay, m.params(holders[0]).data(), TensorSet::blocks, l);
    }
  if (m.deck.dipaco.shared == SharedGroups::embeddings) {
    H5Id e = make_group(o, "embeddings");
    write_tensors(e, lay, m.params(0).data(), TensorSet::embeddings);
  } else {
    for (int p = 0; p < topo.paths; ++p) {
      H5Id e = make_group(o, "paths/P" + std::to_string(p) + "/embeddings");
      write_tensors(e, lay, m.params(p).data(), TensorSet::embeddings);
    }
  }
  if (diff > 0)
    std::printf("note: paths sharing a module differ by up to %.3g (the run did not end on an outer round); each module "
                "is taken from the first path that holds it\n",
                diff);
}

}  // namespace

int cmd_export(const Args& args) {
  std::string ckpt, out;
  long path = -1;
  bool all = false;
  for (size_t i = 0; i < args.size(); ++i) {
    if (is_flag(args[i], "--path")) path = int_option("--path", option(args, i, "--path"), 0, kMaxPaths - 1);
    else if (args[i] == "--all") all = true;
    else if (args[i].rfind("--", 0) == 0) throw UsageError("unknown option '" + args[i] + "' (export takes --path P or --all)");
    else (ckpt.empty() ? ckpt : out) = args[i];
  }
  if (ckpt.empty() || out.empty() || (path < 0) == !all)
    throw UsageError("usage: dipaco export CKPT.h5 (--path P | --all) OUT.h5");
  // The export would replace its own source (the rename at the end): refused before anything is read.
  std::error_code ec;
  if (fs::equivalent(ckpt, out, ec) || fs::weakly_canonical(ckpt, ec) == fs::weakly_canonical(out, ec))
    throw UsageError("export: '" + out + "' is the checkpoint it reads ('" + ckpt + "'); name another output file");
  const TrainedModel m = open_trained_model(ckpt);
  if (m.kind != "checkpoint") throw InputError("'" + ckpt + "' is a " + m.kind + "; export reads a training checkpoint");
  if (path >= m.paths)
    throw UsageError("--path " + std::to_string(path) + ": the checkpoint has paths 0.." + std::to_string(m.paths - 1));
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  write_h5_atomic(out, [&](hid_t o) {
    write_attr_string(o, "format", all ? "dipaco-model-all" : "dipaco-model");
    write_hyperparameters(o, m);
    if (m.tokenizer) {  // an export carries its tokenizer: it is read without the run's store
      const hsize_t n = m.tokenizer->serialized().size();
      write_dataset(o, "tokenizer", H5T_NATIVE_UINT8, 1, &n, m.tokenizer->serialized().data());
    }
    if (all) {
      write_whole(o, m);
      if (m.deck.route.method == RouteMethod::kmeans) {  // a run routed by a rule has no router
        const RunRouter r = load_run_router(m, "");
        write_router(o, m, r);
        if (m.deck.route.segment_tokens > 0) write_segment_router(o, m, r);
      }
    } else {
      write_attr_long(o, "path", path);
      H5Id g = make_group(o, "tensors");
      write_tensors(g, make_layout(m.shape), m.params(int(path)).data(), TensorSet::all);
    }
  });
  const size_t n = make_layout(m.shape).total;
  if (all) std::printf("exported %d paths of %s (every module once, the path table, the router) to %s\n", m.paths, ckpt.c_str(), out.c_str());
  else std::printf("exported path %ld of %s (%zu parameters) to %s\n", path, ckpt.c_str(), n, out.c_str());
  return kExitOk;
}

namespace {

// Bits per byte of a text read as one token stream in consecutive windows of T
// targets: window w feeds tokens [wT, wT + T) and predicts tokens [wT + 1, wT + T + 1),
// so every token after the first is scored once, with the context of its window;
// a SentencePiece token counts the bytes it stands for.
double text_bits_per_byte(const TrainedModel& m, int path, const std::string& raw, double& scored) {
  const std::vector<int32_t> text = encode_text(m, raw);
  const std::vector<uint8_t> no_table, &table = m.tokenizer ? m.tokenizer->token_bytes() : no_table;
  const ModelShape& s = m.shape;
  auto k = make_kernels(Device::cpu);
  Model model(*k, s, 1, Precision::fp32);
  DeviceBuffer<float> p(*k, m.params(path).size());
  k->to_device(p.get(), m.params(path).data(), m.params(path).size() * sizeof(float));
  DeviceBuffer<int32_t> tok(*k, s.T), tgt(*k, s.T);
  std::vector<int32_t> x(s.T), y(s.T);
  std::vector<float> loss(s.T);
  double nats = 0;
  scored = 0;
  for (size_t w = 0; w + 1 < text.size(); w += s.T) {
    const size_t n = std::min<size_t>(s.T, text.size() - 1 - w);
    for (size_t t = 0; t < size_t(s.T); ++t) {
      x[t] = t < n ? text[w + t] : 0;
      y[t] = t < n ? text[w + t + 1] : 0;
    }
    k->to_device(tok.get(), x.data(), x.size() * sizeof(int32_t));
    k->to_device(tgt.get(), y.data(), y.size() * sizeof(int32_t));
    model.forward(p.get(), tok.get(), tgt.get());
    k->to_host(loss.data(), model.token_losses(), loss.size() * sizeof(float));
    for (size_t t = 0; t < n; ++t) nats += loss[t];  // padding past the text is not scored (causal)
    scored += target_bytes(y.data(), n, table);
  }
  return nats / std::log(2.0) / scored;
}

std::string read_text_file(const std::string& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw InputError("--text: cannot read '" + file + "'");
  std::ostringstream ss;
  ss << in.rdbuf();
  if (ss.str().size() < 2) throw InputError("--text: '" + file + "' needs at least 2 bytes (one to predict)");
  return ss.str();
}

// The path's own validation shard, as the run evaluated it.
// "%.<digits>f", or "nan" / "inf" (never "-nan").
std::string fixed(double x, int digits) {
  if (!std::isfinite(x)) return std::isnan(x) ? "nan" : "inf";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, x);
  return buf;
}

// A model whose losses are not finite is no result: said, and a non-zero exit.
int nonfinite_exit(double bpb) {
  if (std::isfinite(bpb)) return kExitOk;
  std::fprintf(stderr, "dipaco: error: the model's losses are not finite (its weights hold NaN or inf)\n");
  return kExitDiverged;
}

int evaluate_on_shard(const TrainedModel& m, int path, const std::string& file) {
  return with_mpi([&] {
    const Deck& src = m.deck;
    Deck d = dense_deck(m.deck_text);
    const int P = m.paths;
    // The run's newest shard file (next to its checkpoints), else the rule.
    const std::string run_dir = fs::path(m.source).parent_path().parent_path().string();
    const TokenStore store(store_dir_of(src.data.store, run_dir));  // the run's documents, mapped
    const Split split = store.split();
    const std::string shard_file = latest_shard_file(run_dir);
    Assignment ta, va;
    if (!shard_file.empty()) {
      ShardFile sf = read_shard_file(shard_file, split);
      ta = sf.train, va = sf.val;
    } else if (src.route.method != RouteMethod::kmeans) {
      ta = assign_by_rule(split.train, P, src.route.method), va = assign_by_rule(split.val, P, src.route.method);
    } else {
      throw InputError("the shard file of the run that trained " + file + " is missing (expected next to " + m.source + ")");
    }
    if (int(ta.size()) != P)
      throw CheckpointError(shard_file + " holds " + std::to_string(ta.size()) + " paths, the model's run had " + std::to_string(P));
    auto train = shards_of(split.train, ta), val = shards_of(split.val, va);
    auto k = make_kernels(d.run.device);
    Trainer t(d, MPI_COMM_WORLD, *k, {train[path]}, {val[path]}, "", false);
    t.set_token_bytes(store_token_bytes(store));
    k->to_device(t.paths()[0].params.get(), m.params(path).data(), m.params(path).size() * sizeof(float));
    if (val[path].empty())
      throw InputError("path " + std::to_string(path) + " has no validation documents in " + shard_file +
                      " (the router sent none there); use --text FILE");
    EvalResult e = t.evaluate();
    std::printf("path %d: validation %s %s on its own shard (%.0f tokens)\n", path,
                store.bytes() || !t.token_bytes().empty() ? "bits per byte" : "bits per token", fixed(e.bpb, 6).c_str(),
                e.path_tokens[0]);
    return nonfinite_exit(e.bpb);
  });
}

}  // namespace

int cmd_evaluate(const Args& args) {
  std::string file, text_file;
  long path = -1;
  for (size_t i = 0; i < args.size(); ++i) {
    if (is_flag(args[i], "--path")) path = int_option("--path", option(args, i, "--path"), 0, kMaxPaths - 1);
    else if (is_flag(args[i], "--text")) text_file = option(args, i, "--text");
    else if (args[i].rfind("--", 0) == 0) throw UsageError("unknown option '" + args[i] + "' (evaluate takes --path P, --text FILE)");
    else if (file.empty()) file = args[i];
    else throw UsageError("usage: dipaco evaluate MODEL.h5 [--path P] [--text FILE]");
  }
  if (file.empty()) throw UsageError("usage: dipaco evaluate MODEL.h5 [--path P] [--text FILE]");
  const TrainedModel m = open_trained_model(file);
  if (m.only_path >= 0 && path >= 0 && path != m.only_path)
    throw UsageError("--path " + std::to_string(path) + ": " + file + " holds only path " + std::to_string(m.only_path));
  if (m.only_path < 0 && path < 0 && m.paths > 1)
    throw UsageError(file + " holds " + std::to_string(m.paths) + " paths: choose one with --path (0.." + std::to_string(m.paths - 1) + ")");
  if (path >= m.paths) throw UsageError("--path " + std::to_string(path) + ": the model has paths 0.." + std::to_string(m.paths - 1));
  const int p = m.only_path >= 0 ? int(m.only_path) : int(std::max(0L, path));
  if (text_file.empty()) return evaluate_on_shard(m, p, file);
  require_text_model(m, "evaluate --text");
  double scored = 0;
  const double bpb = text_bits_per_byte(m, p, read_text_file(text_file), scored);
  std::printf("path %d: %s bits per byte on %s (%.0f bytes scored, windows of %d)\n", p, fixed(bpb, 8).c_str(),
              text_file.c_str(), scored, m.shape.T);
  return nonfinite_exit(bpb);
}

}  // namespace dipaco
