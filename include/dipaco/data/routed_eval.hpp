// Routed evaluation: each validation document is read by the one path its
// prefix routes it to (the prefix itself is not scored), optionally re-routed
// every N tokens by the window before; bits per byte per path, per domain and
// overall. Also the per-document losses that discriminative re-routing uses.
//
// Every target is scored with the same context whatever the routing: a
// document's targets are cut into fixed tiles (1..T-1, then T/2 at a time),
// each read by the window of T bytes that ends with it, so a target past the
// first tile sees at least T - T/2 bytes; re-routing only chooses the path
// that scores a piece of a tile. Losses are summed in fixed point (2^-24 nats),
// so the totals do not depend on how the targets were grouped.
#pragma once
#include <string>
#include <vector>

#include "dipaco/data/corpus.hpp"
#include "dipaco/data/features.hpp"
#include "dipaco/data/router.hpp"
#include "dipaco/train/trainer.hpp"

namespace dipaco {

// Targets [from, to) of a document scored by a path in the window of T bytes
// that ends at window_end (the end of the tile they belong to).
struct ScoreItem {
  int path;
  const Document* doc;
  size_t from, to;
  size_t window_end;  // to <= window_end, window_end - from <= T - 1 when from > 0
};
// Collective: sum of the losses (nats) of every item, each computed on a rank of its path.
std::vector<double> score_items(Trainer& t, const std::vector<ScoreItem>& items);
// Cuts targets [from, to) of a document along its fixed tiles into items.
void add_items(std::vector<ScoreItem>& items, int path, const Document* doc, size_t from, size_t to, int T);

struct RoutedEval {
  double bpb = 0, bytes = 0;
  std::vector<double> path_bpb, path_bytes;
  std::vector<std::string> domains;
  std::vector<double> domain_bpb, domain_bytes;
  long segments = 0;  // routing decisions made
};

// The scored segments [from, to) of a validation document: from the routing
// prefix to its first eval.doc_bytes tokens (its end token included), cut
// every `every` tokens (0: one segment). Each segment after the first is
// re-routed by the prefix_tokens before it: the window [from - prefix, from).
struct Segment {
  size_t from, to;
};
std::vector<Segment> scored_segments(const Document& d, const Deck& deck, size_t every);
// The same cut of stream tokens [0, end): [prefix, prefix + every), ... (every = 0: one segment).
std::vector<Segment> cut_segments(size_t end, size_t prefix, size_t every);

// The tokens before a re-routed segment whose features pick its path: eval.reroute_window,
// else route.prefix_tokens. `features` must pool that many.
size_t reroute_window(const Deck& deck);
// The margin a re-routed segment needs to leave its document's path: eval.reroute_margin, else route.segment_margin.
double reroute_margin(const Deck& deck);
// Whether the segment starting at `from` is re-routed, by the window [from - reroute_window, from):
// not a document's first segment (its prefix routed it), nor one with fewer tokens before it
// than the window (it keeps the path before it).
inline bool rerouted(size_t from, size_t prefix, size_t window) { return from > prefix && from >= window; }
inline bool rerouted(size_t from, const Deck& deck) { return rerouted(from, size_t(deck.route.prefix_tokens), reroute_window(deck)); }

// doc_path: the path of each validation document by its prefix (from the shard file).
// With eval.reroute_every > 0 and a router, later segments are re-routed by features.
RoutedEval routed_evaluate(Trainer& t, const DocList& val, const std::vector<int>& doc_path,
                           const Router* router, FeatureModel& features, const Deck& deck);

// Collective: mean loss (nats per byte) on the first window of each document
// for each of its candidate paths: [n, P] on every rank, infinity elsewhere.
std::vector<double> document_losses(Trainer& t, const DocList& docs,
                                    const std::vector<std::vector<int>>& candidates);

}  // namespace dipaco
