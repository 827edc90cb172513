// The "key = value" lines dipaco writes itself: the resolved deck (with
// [section] headers), the stage stamps and the run lock. Not a reader of
// users' decks (that is deck.cpp, with its errors and line numbers).
#pragma once
#include <map>
#include <sstream>
#include <string>

namespace dipaco {

// Keys under a [section] header come back as "section.key"; "#" lines are skipped.
inline std::map<std::string, std::string> parse_key_lines(const std::string& text) {
  std::map<std::string, std::string> out;
  std::istringstream in(text);
  std::string section;
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    if (line[0] == '[') {
      section = line.substr(1, line.find(']') - 1);
      continue;
    }
    const auto eq = line.find(" = ");
    if (eq == std::string::npos) continue;
    out[(section.empty() ? "" : section + ".") + line.substr(0, eq)] = line.substr(eq + 3);
  }
  return out;
}

}  // namespace dipaco
