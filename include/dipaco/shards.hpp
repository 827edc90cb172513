// Shards: which documents each path trains on. Before routing, a simple rule
// from the deck (hash of the id, or the domain label); the router replaces it.
#pragma once
#include <string>
#include <vector>

#include "dipaco/corpus.hpp"

namespace dipaco {

using Shard = std::vector<const Document*>;

// rule: "hash" (hash of id mod P) or "domain" (sorted domain labels, round-robin over paths).
std::vector<Shard> shard_by_rule(const std::vector<Document>& docs, int paths, const std::string& rule);

}  // namespace dipaco
