#include "dipaco/data/routed_eval.hpp"

#include <algorithm>
#include <cmath>
#include <map>

#include "dipaco/data/padded_batches.hpp"
#include "dipaco/dist/pieces.hpp"
#include "dipaco/dist/watchdog.hpp"

namespace dipaco {

namespace {
// Fixed-point unit of summed losses: sums of multiples of 2^-24 below 2^29
// nats are exact in double, in any order.
constexpr double kLossUnit = 1.0 / (1 << 24);
constexpr float kLossLimit = float(1 << 29);  // nats of one target
}  // namespace

void add_items(std::vector<ScoreItem>& items, int path, const Document* doc, size_t from, size_t to, int T) {
  // Tiles [1, T), then [T + kS, T + (k+1)S) with S = T/2: a document's own, whatever the routing.
  const size_t t = size_t(T), stride = std::max<size_t>(1, t / 2);
  for (size_t f = std::max<size_t>(from, 1); f < to;) {
    const size_t tile_end = f < t ? t : t + ((f - t) / stride + 1) * stride;
    const size_t g = std::min(to, tile_end);
    items.push_back({path, doc, f, g, tile_end});
    f = g;
  }
}

std::vector<double> score_items(Trainer& t, const std::vector<ScoreItem>& items) {
  const Topology& topo = t.topology();
  int rank;
  MPI_Comm_rank(t.world(), &rank);
  const int T = t.deck().model.context, B = t.local_batch();
  const int rip = topo.rank_in_path(rank), rpp = topo.ranks_per_path;
  std::vector<double> loss(items.size(), 0.0);
  std::vector<int32_t> tok(size_t(B) * T), tgt(size_t(B) * T);
  std::vector<float> out;
  using Window = std::pair<const Document*, size_t>;  // document, window end
  for (auto& p : t.paths()) {
    // The distinct windows of p's items in order of first appearance, each computed once: items
    // cut differently from the same windows (another routing) are then scored from the same numbers.
    std::map<Window, size_t> index;
    std::vector<Window> windows;
    std::vector<std::vector<size_t>> readers;  // items scored from each window
    for (size_t i = 0; i < items.size(); ++i) {
      if (items[i].path != p.id) continue;
      auto [it, fresh] = index.emplace(Window{items[i].doc, items[i].window_end}, windows.size());
      if (fresh) {
        windows.push_back(it->first);
        readers.emplace_back();
      }
      readers[it->second].push_back(i);
    }
    std::vector<size_t> mine;  // this rank's share of the windows
    for (size_t w = 0; w < windows.size(); ++w)
      if (int(w % rpp) == rip) mine.push_back(w);
    std::vector<size_t> start(B);
    auto fill = [&](size_t b, size_t k) {
      const auto& [doc, end] = windows[mine[k]];
      const size_t a = end > size_t(T) ? end - T : 0;
      start[b] = a;
      read_window(*doc, a, T, &tok[b * T], &tgt[b * T]);
    };
    padded_batches(mine.size(), B, fill, [&](size_t first, size_t used) {
      t.window_losses(p, tok, tgt, out);
      for (size_t b = 0; b < used; ++b)
        for (size_t i : readers[mine[first + b]]) {
          long long s = 0;
          bool finite = true;
          for (size_t pos = items[i].from; pos < items[i].to; ++pos) {
            const float x = out[b * T + (pos - 1 - start[b])];
            finite = finite && std::fabs(x) < kLossLimit;  // false for NaN and inf
            if (finite) s += std::llround(x / kLossUnit);
          }
          // A loss that is not finite (or past what the fixed point holds) stays NaN through the sums:
          // llround would make a number of it.
          loss[i] = finite ? double(s) * kLossUnit : NAN;
        }
    });
  }
  CollectiveScope wait("the scoring all-reduce");
  allreduce_pieces(loss.data(), loss.size(), MPI_DOUBLE, MPI_SUM, t.world());
  return loss;
}

std::vector<Segment> scored_segments(const Document& d, const Deck& deck, size_t every) {
  return cut_segments(std::min(d.tokens() + 1, size_t(deck.eval.doc_bytes)), size_t(deck.route.prefix_tokens), every);
}

std::vector<Segment> cut_segments(size_t end, size_t prefix, size_t every) {
  std::vector<Segment> out;
  for (size_t s = prefix; s < end; s += every ? every : end) out.push_back({s, every ? std::min(end, s + every) : end});
  return out;
}

size_t reroute_window(const Deck& deck) {
  return size_t(deck.eval.reroute_window > 0 ? deck.eval.reroute_window : deck.route.prefix_tokens);
}

double reroute_margin(const Deck& deck) {
  return deck.eval.reroute_margin >= 0 ? deck.eval.reroute_margin : deck.route.segment_margin;
}

RoutedEval routed_evaluate(Trainer& t, const DocList& val, const std::vector<int>& doc_path,
                           const Router* router, FeatureModel& features, const Deck& deck) {
  const int T = deck.model.context, P = t.topology().paths;
  const size_t prefix = size_t(deck.route.prefix_tokens), window = reroute_window(deck);
  const size_t every = router ? size_t(deck.eval.reroute_every) : 0;
  RoutedEval r;
  std::map<std::string_view, int> domain_index;
  for (const Document& d : val) domain_index.emplace(d.domain, 0);  // views of the source's names
  for (auto& [name, idx] : domain_index) idx = int(r.domains.size()), r.domains.emplace_back(name);
  std::vector<double> pl(P, 0), dl(r.domains.size(), 0);
  r.path_bytes.assign(P, 0), r.domain_bytes.assign(r.domains.size(), 0);
  double total = 0;
  // A chunk of documents at a time (the same chunks on every rank), so that the items
  // held do not grow with the validation set; the fixed-point sums do not depend on it.
  constexpr size_t kChunk = 1024;
  for (size_t first = 0; first < val.size(); first += kChunk) {
    // Segments of each document, and the window that routes each re-routed one.
    struct DocSegment {
      size_t doc, from, to;
      bool rerouted;  // by the next of `windows`; else the document's path (its first segment) or the one before
    };
    std::vector<DocSegment> segs;
    std::vector<FeatureWindow> windows;
    const std::vector<Document> docs = val.documents(first, std::min(val.size(), first + kChunk));  // the items point at them
    for (size_t d = first; d < first + docs.size(); ++d) {
      const Document& doc = docs[d - first];
      for (const Segment& s : scored_segments(doc, deck, every)) {
        segs.push_back({d, s.from, s.to, rerouted(s.from, deck)});
        if (segs.back().rerouted) windows.push_back({&doc, s.from - window});
      }
    }
    std::vector<float> f = features.features(windows, t.world());
    std::vector<ScoreItem> items;
    size_t w = 0;
    int path = 0;
    for (size_t i = 0; i < segs.size(); ++i) {
      const DocSegment& s = segs[i];
      if (s.rerouted) path = router->rerouted_path(&f[(w++) * features.dim()], doc_path[s.doc]);
      else if (s.from == prefix) path = doc_path[s.doc];
      add_items(items, path, &docs[s.doc - first], s.from, s.to, T);
    }
    std::vector<double> loss = score_items(t, items);
    std::vector<int32_t> targets;
    for (size_t i = 0; i < items.size(); ++i) {
      targets.resize(items[i].to - items[i].from);
      if (!t.token_bytes().empty()) read_document(*items[i].doc, items[i].from, targets.size(), targets.data());
      const double n = target_bytes(targets.data(), targets.size(), t.token_bytes());
      const int di = domain_index[items[i].doc->domain];
      pl[items[i].path] += loss[i], r.path_bytes[items[i].path] += n;
      dl[di] += loss[i], r.domain_bytes[di] += n;
      total += loss[i], r.bytes += n;
    }
    r.segments += long(segs.size());
  }
  const double ln2 = std::log(2.0);
  for (int p = 0; p < P; ++p) r.path_bpb.push_back(r.path_bytes[p] > 0 ? pl[p] / r.path_bytes[p] / ln2 : NAN);
  for (size_t d = 0; d < dl.size(); ++d) r.domain_bpb.push_back(r.domain_bytes[d] > 0 ? dl[d] / r.domain_bytes[d] / ln2 : NAN);
  r.bpb = r.bytes > 0 ? total / r.bytes / ln2 : NAN;
  return r;
}

std::vector<double> document_losses(Trainer& t, const DocList& list,
                                    const std::vector<std::vector<int>>& candidates) {
  const std::vector<Document> docs = list.documents(0, list.size());  // the items point at them
  const int T = t.deck().model.context, P = t.topology().paths;
  std::vector<ScoreItem> items;
  std::vector<size_t> cell;  // [doc, path] index of each item
  for (size_t i = 0; i < docs.size(); ++i)
    for (int p : candidates[i]) {
      items.push_back({p, &docs[i], 1, std::min(docs[i].tokens() + 1, size_t(T)), size_t(T)});
      cell.push_back(i * P + p);
    }
  std::vector<double> loss = score_items(t, items), out(docs.size() * P, INFINITY);
  // A path that cannot score a document (a loss that is not finite) is never its nearest.
  for (size_t j = 0; j < items.size(); ++j)
    out[cell[j]] = std::isfinite(loss[j]) ? loss[j] / double(std::max<size_t>(1, items[j].to - items[j].from)) : INFINITY;
  return out;
}

}  // namespace dipaco
