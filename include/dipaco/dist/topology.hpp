// Paths and modules: level l has modules_per_level[l] modules; a path takes
// one module per level (P = product of the counts). Ranks map onto paths:
// R >= P with P | R gives R/P ranks per path (data parallel inside a path);
// R < P with R | P gives P/R paths per rank, trained in turn.
// A private level (dipaco.private_levels) gives every path a module of its
// own there: its module count still routes (path_modules), but no two paths
// share a module of that level.
#pragma once
#include <string>
#include <vector>

namespace dipaco {

struct Topology {
  std::vector<int> modules_per_level;
  std::vector<bool> private_level;  // per level: its modules are private to each path
  int paths = 1;            // P
  int ranks = 1;            // R
  int ranks_per_path = 1;   // R/P when R >= P, else 1
  int paths_per_rank = 1;   // P/R when R < P, else 1

  int levels() const { return int(modules_per_level.size()); }
  bool is_private(int l) const { return l < int(private_level.size()) && private_level[l]; }
  // Name of path p's module at level l: "M3" (shared by the paths routed to it) or "P5" (path 5's own).
  std::string module_name(int p, int l) const;
  // Module index at each level for path p (level 0 most significant).
  std::vector<int> path_modules(int p) const;
  std::vector<int> paths_of_rank(int r) const;
  std::vector<int> ranks_of_path(int p) const;
  // Ranks whose paths contain module m of level l (a shared level's routing index).
  std::vector<int> module_ranks(int l, int m) const;
  std::vector<int> paths_with_module(int l, int m) const;
  int rank_in_path(int r) const { return ranks >= paths ? r % ranks_per_path : 0; }
};

// P: the product of the module counts (every combination of one module per level).
int path_count(const std::vector<int>& modules_per_level);
// Path p's module at each level (level 0 most significant in the path index).
std::vector<int> path_modules(const std::vector<int>& modules_per_level, int p);
// Throws DeckError with the rank counts that work when R fits neither rule.
Topology make_topology(const std::vector<int>& modules_per_level, int ranks, const std::vector<int>& private_levels = {});
std::vector<int> valid_rank_counts(int paths, int up_to);

}  // namespace dipaco
