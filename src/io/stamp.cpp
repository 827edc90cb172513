#include "dipaco/io/stamp.hpp"

#include <algorithm>

#include "dipaco/io/deck.hpp"
#include "dipaco/io/key_lines.hpp"

namespace dipaco {

bool same_stamp(const std::string& kept, const std::string& now) {
  if (kept == now) return true;
  if (kept.empty()) return false;
  const auto a = parse_key_lines(kept), b = parse_key_lines(now);
  for (const auto& [k, v] : a)
    if (auto it = b.find(k); it == b.end() || it->second != v) return false;
  const std::vector<DeckKey>& keys = deck_keys();
  for (const auto& [k, v] : b)
    if (!a.count(k)) {
      const auto key = std::find_if(keys.begin(), keys.end(), [&](const DeckKey& d) { return d.name == k; });
      if (key == keys.end() || key->deflt != v) return false;  // not a deck key (the corpus, a version), or not its default
    }
  return true;
}

}  // namespace dipaco
