// Segment shards (route.segment_tokens = N): a path trains on the segments
// that re-routing would score with it, not on whole documents. Every training
// document is cut as the evaluation cuts it (from the routing prefix, every N
// tokens, here to its end). A segment with a window [s - window, s) past the
// prefix trains the path the windows router picks for that window; the ones
// before it train the document's own path(s). A segment trains as the one
// window of model.context targets that ends with it: its targets with the
// context the evaluation gives them, and the text just before.
#pragma once
#include <mpi.h>

#include <vector>

#include "dipaco/data/corpus.hpp"
#include "dipaco/data/features.hpp"
#include "dipaco/data/router.hpp"
#include "dipaco/data/shards.hpp"
#include "dipaco/dist/topology.hpp"
#include "dipaco/io/deck.hpp"

namespace dipaco {

struct SegmentShards {
  std::vector<TokenStream> held;  // per path of topo.paths_of_rank(rank): its documents and windows
  std::vector<double> bytes;      // every path's segment tokens (a first segment with its prefix): DiLoCo's weights
  long segments = 0, rerouted = 0;  // in all; those placed by the router
};

// route.segment_window, else route.prefix_tokens.
size_t segment_window(const Deck& deck);

// The window that trains segment [from, to): stream tokens [to - 1 - T, to] (from 0 when shorter).
inline uint32_t segment_window_start(size_t to, int T) { return uint32_t(to > size_t(T) + 1 ? to - size_t(T) - 1 : 0); }

// Collective over world. train: the documents of the paths this rank holds
// (indices into docs, the split's training documents); router: the windows
// router of (segment_tokens, segment_window); features pool segment_window
// tokens. Rank r routes the re-routed segments of its block of documents and
// sends each window to the ranks of its path, a round of documents at a time;
// the same windows at any rank count.
SegmentShards segment_shards(const Assignment& train, const DocList& docs, const Router& router, const Topology& topo,
                             int rank, FeatureModel& features, const Deck& deck, MPI_Comm world);

}  // namespace dipaco
