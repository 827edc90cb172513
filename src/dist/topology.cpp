#include "dipaco/dist/topology.hpp"

#include <algorithm>

#include "dipaco/io/deck.hpp"

namespace dipaco {

std::vector<int> path_modules(const std::vector<int>& modules_per_level, int p) {
  std::vector<int> m(modules_per_level.size());
  for (int l = int(m.size()) - 1; l >= 0; --l) m[l] = p % modules_per_level[l], p /= modules_per_level[l];
  return m;
}

std::vector<int> Topology::path_modules(int p) const { return dipaco::path_modules(modules_per_level, p); }

std::string Topology::module_name(int p, int l) const {
  return is_private(l) ? "P" + std::to_string(p) : "M" + std::to_string(path_modules(p)[l]);
}

std::vector<int> Topology::paths_of_rank(int r) const {
  if (ranks >= paths) return {r / ranks_per_path};
  std::vector<int> out;
  for (int i = 0; i < paths_per_rank; ++i) out.push_back(r * paths_per_rank + i);
  return out;
}

std::vector<int> Topology::ranks_of_path(int p) const {
  if (ranks < paths) return {p / paths_per_rank};
  std::vector<int> out;
  for (int i = 0; i < ranks_per_path; ++i) out.push_back(p * ranks_per_path + i);
  return out;
}

std::vector<int> Topology::paths_with_module(int l, int m) const {
  std::vector<int> out;
  for (int p = 0; p < paths; ++p)
    if (path_modules(p)[l] == m) out.push_back(p);
  return out;
}

std::vector<int> Topology::module_ranks(int l, int m) const {
  std::vector<int> out;
  for (int p : paths_with_module(l, m))
    for (int r : ranks_of_path(p)) out.push_back(r);
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

std::vector<int> valid_rank_counts(int paths, int up_to) {
  std::vector<int> out;
  for (int r = 1; r <= up_to; ++r)
    if ((r >= paths && r % paths == 0) || (r < paths && paths % r == 0)) out.push_back(r);
  return out;
}

int path_count(const std::vector<int>& modules_per_level) {
  int p = 1;
  for (int m : modules_per_level) p *= m;
  return p;
}

Topology make_topology(const std::vector<int>& modules_per_level, int ranks, const std::vector<int>& private_levels) {
  Topology t;
  t.modules_per_level = modules_per_level;
  t.private_level.assign(modules_per_level.size(), false);
  for (int l : private_levels) {
    if (l < 0 || l >= int(modules_per_level.size()))
      throw DeckError("dipaco.private_levels: level " + std::to_string(l) + " does not exist");
    t.private_level[l] = true;
  }
  t.ranks = ranks;
  for (int m : modules_per_level)
    if (m < 1) throw DeckError("dipaco.modules_per_level: every level needs at least one module");
  t.paths = path_count(modules_per_level);
  if (ranks >= t.paths && ranks % t.paths == 0) {
    t.ranks_per_path = ranks / t.paths;
  } else if (ranks < t.paths && t.paths % ranks == 0) {
    t.paths_per_rank = t.paths / ranks;
  } else {
    std::string ok;
    for (int r : valid_rank_counts(t.paths, std::max(4 * t.paths, 16))) ok += (ok.empty() ? "" : ", ") + std::to_string(r);
    // The working counts either side of the one asked for (the next multiple of the path count bounds it).
    int below = 1, above = 0;
    for (int r : valid_rank_counts(t.paths, (ranks / t.paths + 1) * t.paths)) {
      if (r < ranks) below = r;
      else if (above == 0) above = r;
    }
    throw DeckError("cannot run " + std::to_string(t.paths) + " paths on " + std::to_string(ranks) +
                    " ranks: the rank count must divide the path count or be a multiple of it; nearest that work: " +
                    std::to_string(below) + " and " + std::to_string(above) + "; rank counts that work: " + ok + ", ...");
  }
  return t;
}

}  // namespace dipaco
