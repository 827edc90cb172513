// The router that re-routes (eval.reroute_router = windows). A window in the
// middle of a document is not a document start, and the k-means fit on starts
// sends it astray; this router's centroid for path p is the mean feature of
// the windows re-routing will see in p's own training documents: tokens
// [s - window, s) for every re-routed segment start s = prefix + k * every
// (k >= 1, s >= window). Unbalanced (the evaluation of whole-document paths):
// every such window in the first eval.doc_bytes, as routed_evaluate reads them.
// Balanced (segment shards, cut over whole documents): windows from anywhere
// in the documents, as the cut reads them. The evaluation's (eval.reroute_every,
// reroute_window) and segment shards' (route.segment_tokens, segment_window)
// are both made here.
#pragma once
#include <mpi.h>

#include "dipaco/data/corpus.hpp"
#include "dipaco/data/features.hpp"
#include "dipaco/data/router.hpp"
#include "dipaco/data/shards.hpp"
#include "dipaco/dist/topology.hpp"
#include "dipaco/io/deck.hpp"

namespace dipaco {

// Unbalanced: training documents per path whose windows make its centroid (spread evenly over its shard).
constexpr size_t kWindowRouterDocs = 128;
// Balanced: windows read from a path's whole shard, spread evenly over all of
// its windows (a document in proportion to its length), each weighing the same.
constexpr size_t kWindowsPerPath = 2048;

// Collective over world: each path's first rank reads its path's windows; the
// flat router of P centroids reaches every rank. A path with no window gets the
// mean of all (never the nearest before a path that has its own).
// `features` pools `window` tokens. Balanced (segment shards): each path's
// distance gets an offset such that the windows go to the paths in about the
// numbers each path's whole shard brings (the nearest centroid alone sends a
// few paths most of a corpus's mid-document windows). `margin`: the router's
// stay, in units of its centroid spacing (a window read from path p's shard
// has p for its own path, and the balance counts it so).
Router window_router(const Assignment& train, const DocList& docs, const Topology& topo, int rank,
                     FeatureModel& features, const Deck& deck, size_t every, size_t window, double margin,
                     bool balanced, MPI_Comm world);
// The offsets of a flat router that bring its paths' shares of the windows `f`
// (this rank's, [n, dim], each of `weight`, empty: 1) to about the shares of
// `target` (every path's, the same on every rank): Sinkhorn's scaling of a soft
// assignment whose temperature falls to a small share of the distance between
// centroids, one sum over ranks per iteration, exact (the same offsets at any
// rank count). A path with no target takes nothing (offset infinity). `own`
// (empty: none): each window's own path, where it stays within r.stay. The
// windows' scores are held up to `table_bytes` (the rest computed again at each
// of the balance's passes: the same offsets, more time).
constexpr size_t kBalanceTableBytes = size_t(128) << 20;
struct Balance {
  double off = 0;   // the largest |share - target| / target of the (offset) nearest path
  double kept = 0;  // the share of the windows that stay on their own path
};
Balance balance_router(Router& r, const std::vector<float>& f, const std::vector<double>& weight,
                       const std::vector<double>& target, MPI_Comm world, const std::vector<int>& own = {},
                       size_t table_bytes = kBalanceTableBytes);
// The evaluation's: every eval.reroute_every tokens, by reroute_window(deck),
// with reroute_margin(deck); balanced when the paths trained on segment shards.
Router reroute_router(const Assignment& train, const DocList& docs, const Topology& topo, int rank,
                      FeatureModel& features, const Deck& deck, MPI_Comm world);

}  // namespace dipaco
