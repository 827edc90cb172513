#include "dipaco/data/window_router.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "dipaco/data/routed_eval.hpp"
#include "dipaco/dist/watchdog.hpp"
#include "dipaco/io/log.hpp"

namespace dipaco {

namespace {

constexpr int kBalanceIterations = 300;
// The balance's temperature falls from the unit to this share of it over the first 3/4 of the iterations.
constexpr double kFinalTemperature = 1e-3;
// Soft counts are summed over ranks as integers of 2^-24: the same sum in any order, so the
// same offsets at any rank count.
constexpr double kCountScale = double(1 << 24);

// The re-routed windows' starts in a training document, in order (every > 0).
std::vector<size_t> window_starts(size_t end, size_t prefix, size_t every, size_t window) {
  std::vector<size_t> out;
  for (const Segment& s : cut_segments(end, prefix, every))
    if (rerouted(s.from, prefix, window)) out.push_back(s.from - window);
  return out;
}
// How many window_starts() lists, without the list: a shard's count reads every document.
size_t window_count(size_t end, size_t prefix, size_t every, size_t window) {
  size_t n = 0;
  for (size_t from = prefix + every; from < end; from += every) n += rerouted(from, prefix, window);
  return n;
}

// A balanced router's sample of a path's whole shard: kWindowsPerPath of its
// re-routed windows spread evenly over all of them (a document in proportion
// to its windows), each standing for the same share. Returns the shard's windows.
double sample_shard(const DocList& shard, size_t prefix, size_t every, size_t window, std::vector<Document>& held,
                    std::vector<FeatureWindow>& out, std::vector<double>& weight) {
  const std::vector<uint64_t> tokens = shard.tokens();
  std::vector<size_t> count(tokens.size());
  size_t total = 0;
  for (size_t i = 0; i < tokens.size(); ++i) total += count[i] = window_count(tokens[i] + 1, prefix, every, window);
  const size_t k = std::min(total, kWindowsPerPath);
  std::vector<std::pair<size_t, size_t>> picks;  // (document, its window)
  for (size_t j = 0, i = 0, before = 0; j < k; ++j) {
    const size_t at = (2 * j + 1) * total / (2 * k);
    while (before + count[i] <= at) before += count[i++];
    picks.push_back({i, at - before});
  }
  std::vector<int> docs;
  for (const auto& [i, w] : picks)
    if (docs.empty() || docs.back() != int(i)) docs.push_back(int(i));
  held = shard.subset(docs).documents(0, docs.size());
  std::vector<size_t> starts;  // of held[d]
  for (size_t j = 0, d = 0; j < picks.size(); ++j) {
    if (docs[d] != int(picks[j].first)) ++d, starts.clear();
    if (starts.empty()) starts = window_starts(held[d].tokens() + 1, prefix, every, window);
    out.push_back({&held[d], starts[picks[j].second]});
    weight.push_back(double(total) / double(k));
  }
  return double(total);
}

// The balance's scores of its windows [n, P], own paths lowered by the stay:
// the first rows as one table up to `table_bytes`, the rest computed again at
// each pass (the same numbers either way), so that a rank's memory stays
// bounded however many paths it reads windows for and however many there are.
class ScoreRows {
 public:
  ScoreRows(const Router& r, const std::vector<float>& f, const std::vector<int>& own, size_t table_bytes)
      : r_(r), f_(f), own_(own), P_(size_t(r.paths())), n_(f.size() / size_t(r.dim)),
        kept_(std::min(n_, table_bytes / (sizeof(double) * P_))), table_(kept_ * P_), scratch_(P_) {
    for (size_t i = 0; i < kept_; ++i) score(i, &table_[i * P_]);
  }
  size_t size() const { return n_; }
  const double* operator()(size_t i) {
    if (i < kept_) return &table_[i * P_];
    score(i, scratch_.data());
    return scratch_.data();
  }

 private:
  // r's offsets stay zero while the balance runs: the scores are distances alone.
  void score(size_t i, double* out) const {
    r_.path_scores(&f_[i * size_t(r_.dim)], out);
    // A window's own path wins ties up to the router's stay: its score there is lowered by it.
    if (r_.stay > 0 && i < own_.size()) out[own_[i]] -= r_.stay;
  }
  const Router& r_;
  const std::vector<float>& f_;
  const std::vector<int>& own_;
  size_t P_, n_, kept_;
  std::vector<double> table_, scratch_;
};

}  // namespace

Router window_router(const Assignment& train, const DocList& docs, const Topology& topo, int rank,
                     FeatureModel& features, const Deck& deck, size_t every, size_t window, double margin,
                     bool balanced, MPI_Comm world) {
  const int P = topo.paths, dim = features.dim();
  const size_t prefix = size_t(deck.route.prefix_tokens);
  // The weighted feature sums per path [P, dim], their weights [P], then (balanced)
  // the windows of each path's whole shard [P]: one sum over ranks.
  std::vector<double> sums(size_t(P) * (dim + 2), 0.0);
  double* counts = &sums[size_t(P) * dim];
  double* brought = counts + P;
  std::vector<float> read;  // balanced: the features of the windows this rank read, their weights and own paths
  std::vector<double> read_weight;
  std::vector<int> read_own;
  if (topo.rank_in_path(rank) == 0 && every > 0)  // a path's other ranks hold the same documents
    for (int p : topo.paths_of_rank(rank)) {
      if (size_t(p) >= train.size() || train[p].empty()) continue;
      std::vector<Document> held;
      std::vector<FeatureWindow> windows;
      std::vector<double> weight;
      if (balanced) {
        brought[p] = sample_shard(docs.subset(train[p]), prefix, every, window, held, windows, weight);
      } else {
        const size_t n = std::min(train[p].size(), kWindowRouterDocs), all = train[p].size();
        std::vector<int> picks;  // spread evenly: a shard lists its documents in the corpus's order, often by domain
        for (size_t j = 0; j < n; ++j) picks.push_back(train[p][(2 * j + 1) * all / (2 * n)]);
        held = docs.subset(picks).documents(0, n);
        for (const Document& d : held)
          for (const Segment& s : scored_segments(d, deck, every))
            if (rerouted(s.from, prefix, window)) windows.push_back({&d, s.from - window}), weight.push_back(1.0);
      }
      if (windows.empty()) continue;
      const std::vector<float> f = features.local_features(windows);
      if (balanced) {
        read.insert(read.end(), f.begin(), f.end());
        read_weight.insert(read_weight.end(), weight.begin(), weight.end());
        read_own.insert(read_own.end(), windows.size(), p);
      }
      for (size_t w = 0; w < windows.size(); ++w) {
        for (int t = 0; t < dim; ++t) sums[size_t(p) * dim + t] += weight[w] * f[w * dim + t];
        counts[p] += weight[w];
      }
    }
  watched("the window router's sums",
          [&] { MPI_Allreduce(MPI_IN_PLACE, sums.data(), int(sums.size()), MPI_DOUBLE, MPI_SUM, world); });
  Router r = centroid_router(std::vector<double>(sums.begin(), sums.begin() + long(P) * dim),
                             std::vector<double>(counts, counts + P), dim, P);
  r.stay = margin * r.centroid_spacing();
  if (balanced) {
    const Balance b = balance_router(r, read, read_weight, std::vector<double>(brought, brought + P), world, read_own);
    say("windows router: balanced on windows from whole documents, each path's share within %.1f%% of what its "
        "documents bring; %.1f%% of the windows stay on their document's path (margin %g)\n",
        100 * b.off, 100 * b.kept, margin);
  }
  return r;
}

Balance balance_router(Router& r, const std::vector<float>& f, const std::vector<double>& weight,
                       const std::vector<double>& target, MPI_Comm world, const std::vector<int>& own,
                       size_t table_bytes) {
  const int P = r.paths();
  auto w = [&](size_t i) { return weight.empty() ? 1.0 : weight[i]; };
  r.offsets.assign(size_t(P), 0.0);
  ScoreRows scores(r, f, own, table_bytes);
  const size_t n = scores.size();
  // The temperature's unit: the same on every rank, whatever the rank count.
  const double unit = r.centroid_spacing();
  // The targets as shares of the windows read (a path that brings none takes none).
  int64_t read_total = 0;
  for (size_t i = 0; i < n; ++i) read_total += std::llround(w(i) * kCountScale);
  watched("the window router's balance", [&] { MPI_Allreduce(MPI_IN_PLACE, &read_total, 1, MPI_INT64_T, MPI_SUM, world); });
  double brought = 0;
  for (double t : target) brought += t;
  std::vector<double> want(size_t(P), 0.0);
  std::vector<char> open(size_t(P), 0);
  for (int p = 0; p < P; ++p)
    if (target[size_t(p)] > 0 && brought > 0) open[size_t(p)] = 1, want[size_t(p)] = target[size_t(p)] / brought * double(read_total) / kCountScale;

  // Sinkhorn's column scaling on the soft assignment softmax_p((g_p - d_ip) / eps),
  // the temperature annealed: offsets -g that give each path its share, and at
  // a low temperature the nearest (offset) centroid gives about the same shares.
  std::vector<double> g(size_t(P), 0.0), e(size_t(P), 0.0);
  std::vector<int64_t> soft(size_t(P), 0);
  for (int it = 0; it < kBalanceIterations && read_total > 0; ++it) {
    const double eps = unit * std::pow(kFinalTemperature, std::min(1.0, it / (0.75 * kBalanceIterations)));
    std::fill(soft.begin(), soft.end(), 0);
    for (size_t i = 0; i < n; ++i) {
      const double* row = scores(i);
      double top = -INFINITY, z = 0;
      for (int p = 0; p < P; ++p)
        if (open[size_t(p)]) top = std::max(top, (g[size_t(p)] - row[p]) / eps);
      for (int p = 0; p < P; ++p) z += e[size_t(p)] = open[size_t(p)] ? std::exp((g[size_t(p)] - row[p]) / eps - top) : 0.0;
      for (int p = 0; p < P; ++p) soft[size_t(p)] += std::llround(w(i) * e[size_t(p)] / z * kCountScale);
    }
    watched("the window router's balance",
            [&] { MPI_Allreduce(MPI_IN_PLACE, soft.data(), P, MPI_INT64_T, MPI_SUM, world); });
    for (int p = 0; p < P; ++p)
      if (open[size_t(p)]) g[size_t(p)] += eps * (std::log(want[size_t(p)]) - std::log(std::max(double(soft[size_t(p)]) / kCountScale, 1e-300)));
  }
  double mean = 0;
  int opened = 0;
  for (int p = 0; p < P; ++p) mean += open[size_t(p)] ? g[size_t(p)] : 0, opened += open[size_t(p)];
  mean /= std::max(opened, 1);
  std::vector<double> offsets(static_cast<size_t>(P));  // r's own only at the end: its scores are distances until then
  for (int p = 0; p < P; ++p)
    offsets[size_t(p)] = open[size_t(p)] ? mean - g[size_t(p)] : std::numeric_limits<double>::infinity();

  // How far the nearest (offset) centroid's shares are from the targets; the
  // windows that stay on their own path (the last entry).
  std::vector<int64_t> got(size_t(P) + 1, 0);
  for (size_t i = 0; i < n; ++i) {
    const double* row = scores(i);
    int best = -1;
    for (int p = 0; p < P; ++p)
      if (open[size_t(p)] && (best < 0 || row[p] + offsets[size_t(p)] < row[best] + offsets[size_t(best)])) best = p;
    if (best >= 0) got[size_t(best)] += std::llround(w(i) * kCountScale);
    if (best >= 0 && i < own.size() && best == own[i]) got[size_t(P)] += std::llround(w(i) * kCountScale);
  }
  watched("the window router's balance", [&] { MPI_Allreduce(MPI_IN_PLACE, got.data(), P + 1, MPI_INT64_T, MPI_SUM, world); });
  r.offsets = offsets;
  Balance out;
  for (int p = 0; p < P; ++p)
    if (open[size_t(p)]) out.off = std::max(out.off, std::abs(double(got[size_t(p)]) / kCountScale - want[size_t(p)]) / want[size_t(p)]);
  out.kept = read_total > 0 ? double(got[size_t(P)]) / double(read_total) : 0;
  return out;
}

Router reroute_router(const Assignment& train, const DocList& docs, const Topology& topo, int rank,
                      FeatureModel& features, const Deck& deck, MPI_Comm world) {
  return window_router(train, docs, topo, rank, features, deck, size_t(deck.eval.reroute_every), reroute_window(deck),
                       reroute_margin(deck), deck.route.segment_tokens > 0, world);
}

}  // namespace dipaco
