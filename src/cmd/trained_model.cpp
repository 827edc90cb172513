// Opening what training or export wrote, for the inference commands.
#include "dipaco/cmd/trained_model.hpp"

#include <hdf5.h>

#include <cmath>
#include <cstdio>
#include <filesystem>

#include "dipaco/data/corpus.hpp"
#include "dipaco/data/token_store.hpp"
#include "dipaco/data/features.hpp"
#include "dipaco/data/segment_shards.hpp"
#include "dipaco/data/shards.hpp"
#include "dipaco/io/checkpoint.hpp"
#include "dipaco/io/h5io.hpp"
#include "dipaco/io/input_error.hpp"
#include "dipaco/io/named_tensors.hpp"
#include "dipaco/io/path_arrays.hpp"
#include "dipaco/train/trainer.hpp"

namespace fs = std::filesystem;

namespace dipaco {

Deck dense_deck(const std::string& source_deck, const Args& overrides) {
  Args ov = {"dipaco.modules_per_level=1", "model.layers_per_level=0", "dipaco.private_levels=none", "dipaco.inner_steps=0",
             "dipaco.overlap_steps=0", "dipaco.replica_mode=data"};
  ov.insert(ov.end(), overrides.begin(), overrides.end());
  return load_deck_text(source_deck, "the model's deck", ov);
}

const std::vector<float>& TrainedModel::params(int path) const {
  if (only_path >= 0) return path_params.at(0);
  return path_params.at(size_t(path));
}

namespace {

// An export carries its tokenizer (/tokenizer: the model's bytes); a
// checkpoint's is the copy in its run's token store.
std::shared_ptr<const Tokenizer> tokenizer_of(hid_t f, const TrainedModel& m) {
  try {
    if (H5Lexists(f, "tokenizer", H5P_DEFAULT) > 0) {
      const std::vector<uint8_t> bytes = read_numbers<uint8_t>(f, "tokenizer", H5T_NATIVE_UINT8, hsize_t(1) << 30);
      return std::make_shared<Tokenizer>(std::string(bytes.begin(), bytes.end()), m.file + "'s /tokenizer");
    }
    const std::string run_dir = fs::path(m.source).parent_path().parent_path().string();
    return std::make_shared<Tokenizer>(store_dir_of(m.deck.data.store, run_dir) + "/tokenizer.model");
  } catch (const CorpusError& e) {
    throw InputError(m.file + " was trained on SentencePiece tokens, but its tokenizer cannot be read: " + e.what());
  }
}

void read_checkpoint_paths(hid_t f, TrainedModel& m) {
  m.paths = int(read_attr_long(open_group(f, "/topology"), "paths", 1, kMaxPaths));
  check_checkpoint_format(f, m.file);
  const PathArrays rows(f, m.file, m.paths, make_layout(m.shape).total);
  for (int p = 0; p < m.paths; ++p) {
    m.path_params.emplace_back(rows.total());
    rows.read("params", p, 0, m.path_params.back().data());
  }
}

// A whole-model export: /embeddings (or /paths/P<p>/embeddings when private),
// /modules/L<l>.M<m>, /topology/path_table; a path is assembled from its modules.
void read_whole_export(hid_t f, TrainedModel& m) {
  m.paths = int(read_attr_long(f, "paths", 1, kMaxPaths));
  const int levels = int(m.deck.dipaco.modules_per_level.size());
  hsize_t rows = 0;
  H5Id t = open_numbers(f, "/topology/path_table", rows, hsize_t(levels));
  if (rows != hsize_t(m.paths)) throw CheckpointError(m.file + ": /topology/path_table has " + std::to_string(rows) + " rows");
  std::vector<long> table(rows * levels);
  check(H5Dread(t, H5T_NATIVE_LONG, H5S_ALL, H5S_ALL, H5P_DEFAULT, table.data()), "reading the path table");
  // The path's layout by level: the whole-model block numbers of each level.
  ModelShape ps = model_shape(m.deck);
  ParamLayout lay = make_layout(ps);
  const bool shared = m.deck.dipaco.shared == SharedGroups::embeddings;
  for (int p = 0; p < m.paths; ++p) {
    std::vector<float> arena(lay.total);
    read_tensors(open_group(f, shared ? "/embeddings" : "/paths/P" + std::to_string(p) + "/embeddings"), lay, arena.data(),
                 TensorSet::embeddings);
    for (int l = 0; l < levels; ++l) {
      const long mod = table[size_t(p) * levels + l];
      read_tensors(open_group(f, "/modules/L" + std::to_string(l) + ".M" + std::to_string(mod)), lay, arena.data(),
                   TensorSet::blocks, l);
    }
    m.path_params.push_back(std::move(arena));  // the leveled layout is the dense one, block by block
  }
}

}  // namespace

TrainedModel open_trained_model(const std::string& file) {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  if (!fs::is_regular_file(file)) throw InputError("cannot open '" + file + "': no such file (a checkpoint or an export)");
  H5Id f(H5Fopen(file.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  if (!f.ok()) throw InputError("'" + file + "' is not an HDF5 file (give a checkpoint ckpt-*.h5 or an export)");
  TrainedModel m;
  m.file = file;
  std::string format;
  if (H5Aexists(f, "format") > 0) format = read_attr_string(f, "format");
  const bool ours = format == "dipaco-model" || format == "dipaco-model-all";
  if ((format.empty() && H5Aexists(f, "format_version") <= 0) || (!format.empty() && !ours))
    throw InputError("'" + file + "' is neither a checkpoint nor an exported model" +
                    (format.empty() ? std::string(" (a warm start?)") : " (its format is " + format + ")"));
  m.deck_text = read_attr_string(f, "deck");
  m.deck = load_deck_text(m.deck_text, "the model's deck");
  m.shape = model_shape(dense_deck(m.deck_text));
  if (format.empty()) {
    m.kind = "checkpoint", m.source = file;
    read_checkpoint_paths(f, m);
  } else if (format == "dipaco-model") {
    m.kind = "path export";
    m.source = read_attr_string(f, "source_checkpoint");
    m.only_path = read_attr_scalar<long>(f, "path", H5T_NATIVE_LONG);
    m.paths = int(read_attr_long(f, "paths", 1, kMaxPaths));
    m.path_params.emplace_back(make_layout(m.shape).total);
    read_tensors(open_group(f, "/tensors"), make_layout(m.shape), m.path_params[0].data(), TensorSet::all);
  } else {
    m.kind = "whole-model export";
    m.source = read_attr_string(f, "source_checkpoint");
    read_whole_export(f, m);
  }
  if (m.deck.data.tokenizer == TokenizerKind::sentencepiece) m.tokenizer = tokenizer_of(f, m);
  return m;
}

namespace {

// The router an --all export carries (/router: centroids and the features model).
RunRouter router_of_export(const TrainedModel& m) {
  RunRouter r;
  H5Id f(H5Fopen(m.file.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  H5Id g = open_group(f, "/router");
  r.shard_file = m.file + ":/router", r.warm_file = m.file + ":/router/features";
  r.prefix = int(read_attr_long(g, "prefix_tokens", 1, 1 << 30));
  r.router.mode = read_attr_string(g, "mode");
  r.router.dim = int(read_attr_long(g, "dim", 1, 1 << 20));
  r.router.modules_per_level = m.deck.dipaco.modules_per_level;
  const size_t levels = r.router.mode == "product" || r.router.mode == "residual" ? r.router.modules_per_level.size() : 1;
  for (size_t l = 0; l < levels; ++l) {
    const std::string name = "centroids_" + std::to_string(l);
    H5Id d(H5Lexists(g, name.c_str(), H5P_DEFAULT) > 0 ? H5Dopen2(g, name.c_str(), H5P_DEFAULT) : -1, H5Dclose);
    if (!d.ok()) throw CheckpointError(m.file + ": /router/" + name + " is missing");
    H5Id space(H5Dget_space(d), H5Sclose);
    const hssize_t n = H5Sget_simple_extent_npoints(space);
    r.router.centroids.emplace_back(size_t(n));
    check(H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, r.router.centroids.back().data()), "reading " + name);
  }
  r.features_params.resize(make_layout(m.shape).total);
  read_tensors(open_group(g, "features"), make_layout(m.shape), r.features_params.data(), TensorSet::all);
  return r;
}

// The windows router an --all export of a segment-trained run carries
// (/segment_router), on the features model of /router (route's).
RunRouter segment_router_of_export(const TrainedModel& m, const RunRouter& route) {
  H5Id f(H5Fopen(m.file.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  if (H5Lexists(f, "segment_router", H5P_DEFAULT) <= 0)
    throw InputError(m.file + " holds no /segment_router (exported before exports carried it): export the checkpoint "
                     "again, or generate without --reroute-every");
  RunRouter r = route;
  H5Id g = open_group(f, "/segment_router");
  r.shard_file = m.file + ":/segment_router";
  r.prefix = int(read_attr_long(g, "prefix_tokens", 1, 1 << 30));
  r.router = read_windows_router(g, m.paths, r.shard_file);
  return r;
}

// The warm start whose features route (or the initialisation when route.warm_steps = 0).
void read_feature_params(const Deck& d, const std::string& run_dir, RunRouter& r) {
  const ModelShape s = model_shape(d);
  r.features_params.resize(make_layout(s).total);
  if (d.route.warm_steps == 0) {
    r.features_params = init_params(s, make_layout(s), d.run.seed);
    r.warm_file = "(the initialisation of run.seed)";
    return;
  }
  r.warm_file = d.route.warm_start.empty() ? run_dir + "/warmstart.h5" : d.route.warm_start;
  H5Id f(fs::is_regular_file(r.warm_file) ? H5Fopen(r.warm_file.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT) : -1, H5Fclose);
  if (!f.ok()) throw InputError("the warm start " + r.warm_file + " whose features route is missing");
  read_floats(f, "params", r.features_params.size(), r.features_params.data(), r.warm_file);
}
}  // namespace

RunRouter load_run_router(const TrainedModel& m, const std::string& shards) {
  if (m.deck.route.method != RouteMethod::kmeans)
    throw InputError("the run routed by route.method = " + name(m.deck.route.method) +
                    ", not by features: there is no router (choose a path with --path)");
  if (m.kind == "whole-model export" && shards.empty()) return router_of_export(m);
  RunRouter r;
  r.prefix = m.deck.route.prefix_tokens;
  const std::string run_dir = fs::path(m.source).parent_path().parent_path().string();
  r.shard_file = shards.empty() ? latest_shard_file(run_dir) : shards;
  if (r.shard_file.empty())
    throw InputError("no shard file in " + run_dir + " (the run directory of " + m.source + "); give one with --shards FILE");
  const Deck& d = m.deck;
  const TokenStore store(store_dir_of(d.data.store, run_dir));
  ShardFile sf = read_shard_file(r.shard_file, store.split());
  if (!sf.has_router) throw InputError(r.shard_file + " holds no router");
  r.router = sf.router;
  if (r.router.paths() != m.paths)
    throw InputError(r.shard_file + " routes to " + std::to_string(r.router.paths()) + " paths, the model has " + std::to_string(m.paths));
  read_feature_params(d, run_dir, r);
  return r;
}

RunRouter load_segment_router(const TrainedModel& m, const RunRouter& route) {
  if (m.kind == "whole-model export") return segment_router_of_export(m, route);
  const std::string run_dir = fs::path(m.source).parent_path().parent_path().string();
  RunRouter r = route;
  r.prefix = int(segment_window(m.deck));
  r.shard_file = run_dir + "/segments.h5";
  if (!fs::is_regular_file(r.shard_file))
    throw InputError("the run trained on segment shards, and " + r.shard_file +
                     " (its windows router) is missing: run its train stage again, or generate without --reroute-every");
  r.router = read_segment_router(r.shard_file, m.paths);
  return r;
}

TextRouter::TextRouter(const RunRouter& r, const TrainedModel& m)
    : r_(r), m_(m), s_(prefix_shape(m.shape, r.prefix)), params_(prefix_params(m.shape, r.features_params, r.prefix)),
      k_(make_cpu_kernels()), model_(std::make_unique<Model>(*k_, s_, 1, Precision::fp32)) {}

RouteChoice TextRouter::route(const std::string& text) const { return route(encode_text(m_, text), 0); }

// The routing features of the run (features.cpp): the warm-start model's
// final hidden state mean-pooled over the prefix's positions.
RouteChoice TextRouter::route(const std::vector<int32_t>& ids, size_t begin, int own) const {
  Model& model = *model_;
  std::vector<int32_t> tok(s_.T, 0);
  const Document doc{"", "", std::string_view(reinterpret_cast<const char*>(ids.data()), ids.size() * 4), 4, end_token(m_)};
  read_document(doc, begin, size_t(s_.T), tok.data());
  model.forward(params_.data(), tok.data(), tok.data());
  const int C = s_.C, m = s_.T;
  const size_t left = ids.size() + 1 > begin ? ids.size() + 1 - begin : 1;
  const int n = int(std::min<size_t>(m, left));
  std::vector<float> f(C, 0.0f);
  for (int t = 0; t < n; ++t)
    for (int c = 0; c < C; ++c) f[c] += model.hidden()[size_t(t) * C + c] / float(n);
  RouteChoice out;
  out.mode = r_.router.mode;
  out.scores.resize(r_.router.paths());
  r_.router.path_scores(f.data(), out.scores.data());
  out.path = r_.router.pick(out.scores.data(), own);
  return out;
}

std::string RouteChoice::why() const {
  char buf[160];
  if (mode == "logistic") {
    double top = -scores[path], z = 0;
    for (double s : scores) z += std::exp(-s - top);
    std::snprintf(buf, sizeof buf, "probability %.3f", 1.0 / z);
    return buf;
  }
  int next = -1;
  for (int p = 0; p < int(scores.size()); ++p)
    if (p != path && (next < 0 || scores[p] < scores[next])) next = p;
  if (next < 0) std::snprintf(buf, sizeof buf, "squared distance %.4g (the only path)", scores[path]);
  else std::snprintf(buf, sizeof buf, "squared distance %.4g (next P%d at %.4g)", scores[path], next, scores[next]);
  return buf;
}

void require_text_model(const TrainedModel& m, const std::string& command) {
  if (m.shape.V != 256 && !m.tokenizer)
    throw InputError(m.file + ": a model with a vocabulary of " + std::to_string(m.shape.V) +
                    " token ids trained on token files without a tokenizer: " + command +
                    " reads and writes text, so it needs a byte-level or SentencePiece model");
}

std::vector<int32_t> encode_text(const TrainedModel& m, const std::string& text) {
  if (m.tokenizer) {
    const std::vector<int> ids = m.tokenizer->encode(text);
    return std::vector<int32_t>(ids.begin(), ids.end());
  }
  return std::vector<int32_t>(reinterpret_cast<const uint8_t*>(text.data()), reinterpret_cast<const uint8_t*>(text.data()) + text.size());
}

std::string decode_tokens(const TrainedModel& m, const std::vector<int32_t>& ids) {
  if (m.tokenizer) return m.tokenizer->decode(std::vector<int>(ids.begin(), ids.end()));
  return std::string(ids.begin(), ids.end());
}

int32_t end_token(const TrainedModel& m) { return m.tokenizer ? m.tokenizer->eod() : 0; }

}  // namespace dipaco
