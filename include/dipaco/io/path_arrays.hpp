// The paths' arrays of a checkpoint (format 2): one dataset per kind over
// every path, instead of a group of datasets per path.
//
//   /paths/params, adam_m, adam_v   [paths, replicas, columns] float
//   /paths/outer_error              the same, with error feedback on (lossy dipaco.outer_dtype)
//     attrs: groups     the arena groups a row holds, in arena order, one name a line
//            checksums  [paths, replicas, groups] checksum() (checkpoint.hpp) of each (path, replica, group) piece
//   /paths attrs: arena_groups ("name:offset:size" a line), replicas, steps [paths], shard_tokens [paths]
//
// A group that every path holds as a copy of a synced module, and whose every
// copy equals that module's anchor (all of them right after an outer round),
// is not stored in params: it is read from /modules/<unit>/anchor. The
// optimizer moments differ per path and are always stored whole.
#pragma once
#include <hdf5.h>

#include <map>
#include <string>
#include <vector>

#include "dipaco/io/h5io.hpp"

namespace dipaco {

struct GroupSpan {
  size_t offset = 0, size = 0;
};

// A count or offset from a text attribute; `what` names the field in errors.
size_t parse_count(const std::string& s, const std::string& what);
// "name:offset:size" lines (the arena_groups attribute), in order, checked.
std::vector<std::pair<std::string, GroupSpan>> parse_arena_groups(const std::string& text, const std::string& what);

// The path arrays' kinds, in file order; the last only in runs with error feedback.
inline const std::vector<std::string>& path_array_kinds() {
  static const std::vector<std::string> k = {"params", "adam_m", "adam_v", "outer_error"};
  return k;
}

// Refuses a file whose format_version is not this build's, saying what to do.
void check_checkpoint_format(hid_t f, const std::string& file);

// Reads rows of the path arrays of an open checkpoint; every field is checked
// against the file (and, where given, the caller's arena size) before use.
class PathArrays {
 public:
  // `paths` is /topology's path count; `want_total` the arena size the reader
  // needs (0: take the file's).
  PathArrays(hid_t f, const std::string& file, long paths, size_t want_total = 0);

  long replicas() const { return replicas_; }
  size_t total() const { return total_; }
  const std::vector<std::pair<std::string, GroupSpan>>& groups() const { return arena_; }
  long step(long p) const { return steps_.at(size_t(p)); }
  double shard_tokens(long p) const { return shard_.at(size_t(p)); }
  // The module index of path p at level l (/topology/path_table).
  long module(long p, int l) const { return table_.at(size_t(p) * levels_ + l); }
  int levels() const { return levels_; }
  bool has(const std::string& kind) const { return kinds_.count(kind) > 0; }
  // Replica r of path p's array `kind` into arena (total() floats), every piece
  // checked against its checksum; params groups not stored come from their anchors.
  void read(const std::string& kind, long p, long r, float* arena) const;
  // Where path p's copy of an arena group is read from when params does not store it.
  std::string anchor_of(const std::string& group, long p) const;

 private:
  struct Kind {
    std::vector<int> stored;            // arena group indices, in row order
    std::vector<size_t> column;         // each stored group's first column
    std::vector<uint64_t> sums;         // [paths, replicas, stored]
  };
  hid_t f_;
  std::string file_;
  long paths_ = 0, replicas_ = 1;
  int levels_ = 0;
  size_t total_ = 0;
  std::vector<std::pair<std::string, GroupSpan>> arena_;
  std::vector<long> steps_, table_, private_;
  std::vector<double> shard_;
  bool shared_embeddings_ = false;
  std::map<std::string, Kind> kinds_;
  mutable std::map<std::string, std::vector<float>> anchors_;  // read so far, by group path
};

}  // namespace dipaco
