#include "dipaco/shards.hpp"

#include <map>

namespace dipaco {

std::vector<Shard> shard_by_rule(const std::vector<Document>& docs, int paths, const std::string& rule) {
  std::vector<Shard> shards(paths);
  std::map<std::string, int> domain_index;
  for (const auto& d : docs) domain_index.emplace(d.domain, 0);
  int i = 0;
  for (auto& [name, idx] : domain_index) idx = i++;
  for (const auto& d : docs) {
    int p = rule == "domain" ? domain_index[d.domain] % paths : int(hash64(d.id, 17) % uint64_t(paths));
    shards[p].push_back(&d);
  }
  return shards;
}

}  // namespace dipaco
