// Deck parser: INI text plus command-line overrides. The input is the deck
// text, then a 0 byte, then overrides separated by 0 bytes. Besides not
// crashing, a deck that loads must load again, unchanged, from its resolved
// text (what deck.ini and checkpoints store).
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "dipaco/io/deck.hpp"
#include "dipaco/dist/topology.hpp"

using namespace dipaco;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string in(reinterpret_cast<const char*>(data), size);
  size_t cut = in.find('\0');
  std::string text = in.substr(0, cut);
  std::vector<std::string> overrides;
  for (size_t at = cut; at != std::string::npos && at < in.size();) {
    size_t next = in.find('\0', at + 1);
    std::string arg = in.substr(at + 1, next == std::string::npos ? std::string::npos : next - at - 1);
    if (!arg.empty()) overrides.push_back(arg);
    at = next;
  }
  Deck deck;
  try {
    deck = load_deck_text(text, "fuzz.ini", overrides);
  } catch (const DeckError&) {
    return 0;
  }
  try {
    Deck again = load_deck_text(deck.text(), "resolved", {});
    if (again.values != deck.values) {
      std::fprintf(stderr, "resolved deck does not round-trip:\n%s", deck.text().c_str());
      std::abort();
    }
  } catch (const DeckError& e) {
    std::fprintf(stderr, "resolved deck does not load again: %s\n%s", e.what(), deck.text().c_str());
    std::abort();
  }
  for (int ranks : {1, 2, 4}) {
    try {
      make_topology(deck.dipaco.modules_per_level, ranks);
    } catch (const DeckError&) {
    }
  }
  return 0;
}
