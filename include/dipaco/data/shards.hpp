// Shards: which documents each path trains on and is evaluated on. A rule
// (hash of the id, or the domain label) or the router decides; a shard file
// keeps the decision (HDF5, written once per routing round):
//   /                 attrs: format = "dipaco-shards", stamp, paths, round
//   /router           attrs: mode, dim, modules_per_level; datasets centroids_<l> [k, width]
//   /train/P<p>       doc_index, tokens [n] int64; ids [n] strings
//   /val/P<p>         the same for validation documents
// doc_index counts documents of the split in corpus order; tokens are bytes + 1
// (end of document), the shard size that weights DiLoCo's outer gradients.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "dipaco/data/corpus.hpp"
#include "dipaco/data/router.hpp"

namespace dipaco {

using Shard = DocList;
using Assignment = std::vector<std::vector<int>>;  // per path: indices into the split's documents

// rule: hash (hash of id mod P) or domain (sorted domain labels, round-robin over paths).
Assignment assign_by_rule(const DocList& docs, int paths, RouteMethod rule);
std::vector<Shard> shards_of(const DocList& docs, const Assignment& a);
// A shard's tokens + 1 a document (the end of document): its DiLoCo weight, read in blocks.
double shard_bytes(const Shard& shard);
// Per document, the paths it is in (or its one path) -> per path, its documents.
Assignment by_path(const std::vector<std::vector<int>>& paths_of_doc, int paths);
Assignment by_path(const std::vector<int>& path_of_doc, int paths);

struct ShardFile {
  std::string stamp;
  int round = 0;
  bool has_router = false;
  Router router;
  // train: the documents of the paths a rank holds (read_shard_file's `held`;
  // the others empty); val: every path's (a small share, for the routed evaluation).
  Assignment train, val;
  // Every path's training documents and tokens + 1 each (DiLoCo's weights).
  std::vector<long> train_docs;
  std::vector<double> train_bytes;
  // Set by the route: train holds the lists of this rank's block of documents
  // only, written a rank at a time; every path's longest id.
  std::vector<size_t> block_id_width;
};

// Training lists that reach the writer in pieces (the route's, one rank's block
// at a time): next() gives every path's next documents, ascending, and nullptr
// at the end; docs and id_width are every path's totals (documents, longest id).
struct ShardPieces {
  std::vector<long> docs;
  std::vector<size_t> id_width;
  std::function<const Assignment*()> next;
};

// Written from one rank; throws CheckpointError on failure (the previous file
// stays). The training lists are s.train's, or `train`'s pieces when given.
void write_shard_file(const std::string& path, const ShardFile& s, const Split& split, const ShardPieces* train = nullptr);
// The newest shard file of a run directory (shards-r<N>.h5 with the largest N, else shards.h5; "" if none).
std::string latest_shard_file(const std::string& run_dir);
// Validates every index against the split; throws CheckpointError naming the
// file and field. With `held`, only those paths' training documents are read.
ShardFile read_shard_file(const std::string& path, const Split& split, const std::vector<int>* held = nullptr);
// Fills train_docs / train_bytes from the training lists, then keeps those of `held` only.
void keep_held(ShardFile& s, const DocList& train, const std::vector<int>& held);

}  // namespace dipaco
