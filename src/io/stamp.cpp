#include "dipaco/io/stamp.hpp"

#include <algorithm>
#include <sstream>
#include <vector>

#include "dipaco/io/deck.hpp"
#include "dipaco/io/key_lines.hpp"

namespace dipaco {

namespace {
std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) out.push_back(line);
  return out;
}
}  // namespace

bool same_stamp(const std::string& kept, const std::string& now) {
  if (kept == now) return true;
  // Only stamps of "key = value" lines compare by key.
  for (const std::string* t : {&kept, &now}) {
    const std::vector<std::string> l = lines(*t);
    if (l.empty() || !std::all_of(l.begin(), l.end(), [](const std::string& x) { return x.find(" = ") != std::string::npos; }))
      return false;
  }
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
