// Segment shards (route.segment_tokens = N): a path trains on the segments
// that re-routing would score with it, not on whole documents. Every training
// document is cut as the evaluation cuts it (from the routing prefix, every N
// tokens, here to its end). A segment with a window [s - window, s) past the
// prefix trains the path the windows router picks for that window; the ones
// before it train the document's own path(s). A segment trains as the one
// window of model.context targets that ends with it: its targets with the
// context the evaluation gives them, and the text just before.
#pragma once
#include <hdf5.h>
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
  // Per path of topo.paths_of_rank(rank): its windows, doc an index into the
  // training documents, in order.
  std::vector<std::vector<WindowStart>> held;
  std::vector<double> bytes;        // every path's segment tokens (a first segment with its prefix): DiLoCo's weights
  long segments = 0, rerouted = 0;  // in all; those placed by the router
  Router router;                    // the balanced windows router that placed them (set by the caller)
};
// A held path's training stream: the documents that have a window, and its windows.
TokenStream segment_stream(const std::vector<WindowStart>& windows, const DocList& docs);

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

// The cut kept for later starts of the train stage (cutting reads every
// training token through the feature model):
//   /        attrs: format = "dipaco-segments", stamp; datasets bytes [P], counts [2] (segments, re-routed)
//   /P<p>    [n, 2] uint32: its windows (training document, start), in order
//   /router  centroids [P, dim] float, offsets [P] double, stay [1] double:
//            the windows router (generate --reroute-every reads it)
// Collective: rank 0 writes it through FILE.tmp, receiving each path's windows
// from the path's first rank in turn; a write that fails leaves no file and
// returns its reason on rank 0 ("" when written) while the run goes on.
std::string save_segment_shards(const std::string& file, const std::string& stamp, const SegmentShards& s,
                                const Topology& topo, int rank, MPI_Comm world);
// Collective: true on every rank when the file has this stamp and every rank
// read its paths' windows (each checked against the `docs` training documents).
bool load_segment_shards(const std::string& file, const std::string& stamp, size_t docs, const Topology& topo, int rank,
                         MPI_Comm world, SegmentShards& out);
// The windows router of a segments.h5 (one process); throws CheckpointError.
Router read_segment_router(const std::string& file, int paths);
// Collective: true on every rank when every rank read the router of a
// segments.h5 with this stamp (into out); false on every rank otherwise.
bool read_segment_router(const std::string& file, const std::string& stamp, int paths, MPI_Comm world, Router& out);
// A windows router as a group's datasets (centroids [P, dim] float, offsets [P]
// double, stay [1] double), in segments.h5 and in a whole-model export; `where` names the group in errors.
void write_windows_router(hid_t g, const Router& r);
Router read_windows_router(hid_t g, int paths, const std::string& where);

}  // namespace dipaco
