// Corpus JSONL reader: the input is a whole corpus file (broken JSON, invalid
// UTF-8, long lines, missing fields, empty documents). Anything but a clean
// CorpusError is a failure; what loads is split and streamed as in a run.
#include <sstream>
#include <string>

#include "dipaco/data/corpus.hpp"

using namespace dipaco;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::istringstream in(std::string(reinterpret_cast<const char*>(data), size));
  std::vector<Document> docs;
  try {
    docs = read_corpus(in, "fuzz.jsonl");
  } catch (const CorpusError&) {
    return 0;
  }
  Split split = split_corpus(docs, 0.1, 2);
  if (split.train.size() + split.val.size() != docs.size()) __builtin_trap();
  std::vector<const Document*> all;
  for (const auto& d : split.train) all.push_back(&d);
  TokenStream s = make_stream(all);
  std::vector<size_t> starts;
  validation_windows(s, 8, 4, starts);
  for (size_t st : starts)
    if (st + 8 >= s.bytes.size()) __builtin_trap();
  return 0;
}
