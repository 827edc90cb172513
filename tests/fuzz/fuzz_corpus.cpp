// Corpus input reader: the input is a whole corpus file (broken JSON, invalid
// UTF-8, long lines, missing fields, empty documents, compressed or not).
// Anything but a clean CorpusError is a failure; what loads is split and
// streamed as in a run.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "dipaco/data/corpus.hpp"
#include "dipaco/data/input_files.hpp"

using namespace dipaco;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // A zstd frame may ask for a window of up to 2 GB (zstd --long=31 files are
  // read), past the fuzzer's memory limit by design: zstd input is tested by
  // the unit tests (truncated and corrupt streams), not here.
  if (size >= 4 && data[0] == 0x28 && data[1] == 0xb5 && data[2] == 0x2f && data[3] == 0xfd) return 0;
  static const std::string path = [] {
    const char* tmp = std::getenv("TMPDIR");
    static std::string p = std::string(tmp ? tmp : "/tmp") + "/dipaco-fuzz-corpus-" + std::to_string(getpid()) + ".jsonl";
    std::atexit([] { std::remove(p.c_str()); });
    return p;
  }();
  if (FILE* f = std::fopen(path.c_str(), "wb")) {
    std::fwrite(data, 1, size, f);
    std::fclose(f);
  }
  std::vector<InputDocument> owned;
  try {
    // Small pieces: line starts found in the middle of the input too.
    for (auto& p : plan_pieces({path}, 97)) read_piece(p, {}, [&](InputDocument&& d) { owned.push_back(std::move(d)); });
  } catch (const CorpusError&) {
    return 0;
  }
  std::vector<Document> docs;
  for (auto& d : owned) docs.push_back({d.id, d.domain, d.text});
  Split split = split_corpus(docs, 0.1, 2);
  if (split.train.size() + split.val.size() != docs.size()) __builtin_trap();
  TokenStream s = make_stream(split.train);
  std::vector<size_t> starts;
  const int k = validation_windows(s, 8, 4, starts);
  if (size_t(k) != starts.size() || k > 4) __builtin_trap();
  // A window reads tokens [st, st + 9); a stream shorter than that gets one
  // window at 0, padded.
  for (size_t st : starts)
    if (s.size() >= 9 ? st + 8 >= s.size() : st != 0) __builtin_trap();
  return 0;
}
