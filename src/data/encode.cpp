#include "dipaco/data/encode.hpp"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include "dipaco/data/corpus.hpp"
#include "dipaco/data/store_files.hpp"
#include "dipaco/data/token_store.hpp"
#include "dipaco/data/tokenizer.hpp"
#include "dipaco/dist/first_error.hpp"
#include "dipaco/io/files.hpp"

namespace fs = std::filesystem;

namespace dipaco {
namespace {

// SentencePiece learns from sentences of at most 16 kB: a document is given in
// runs of whole lines up to that size (newlines kept: code has them).
constexpr size_t kSentence = 16000;

void train_on_sample(const PrepareOptions& o, const std::string& dir, const std::string& model) {
  const TokenStore store(dir);
  const double total = std::max(1.0, std::atof(store.meta("bytes").c_str()));
  const double fraction = std::min(1.0, double(o.tokenizer_sample_bytes) / total);
  size_t doc = 0;
  std::string text;
  size_t at = 0;
  auto next = [&](std::string& out) {
    while (at >= text.size()) {  // the next sampled training document
      for (; doc < store.documents(); ++doc)
        if (!store.is_val(doc) && unit_hash(read_view(store.document(doc).id)) < fraction) break;
      if (doc >= store.documents()) return false;
      text = store.text(doc++), at = 0;
    }
    size_t end = std::min(text.size(), at + kSentence);
    if (end < text.size())
      if (size_t nl = text.rfind('\n', end - 1); nl != std::string::npos && nl >= at) end = nl + 1;
    out.assign(text, at, end - at);
    at = end;
    return true;
  };
  train_tokenizer(next, o.tokenizer_vocab, o.tokenizer_type, model);
}

uint64_t file_hash(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return hash64(ss.str());
}

}  // namespace

EncodeReport encode_store(const PrepareOptions& o, const std::string& dir, MPI_Comm comm) {
  int rank, size;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  const double t0 = MPI_Wtime();
  const std::string model = dir + "/tokenizer.model";
  agreed(rank == 0, [&] {
    if (!o.tokenizer_model.empty()) {
      const Tokenizer check(o.tokenizer_model);  // names the file when it is no model
      fs::copy_file(o.tokenizer_model, model, fs::copy_options::overwrite_existing);
      return;
    }
    std::printf("prepare: training a %s tokenizer of %d ids on about %.1f MB of the training text\n",
                o.tokenizer_type.c_str(), o.tokenizer_vocab, double(o.tokenizer_sample_bytes) / 1e6);
    std::fflush(stdout);
    train_on_sample(o, dir, model);
  }, comm);

  const Tokenizer tk(model);
  const double t_encode = MPI_Wtime();  // the progress line's rate counts encoding only
  const uint8_t dtype = tk.vocab_size() <= 65536 ? 8 : 4;  // uint16 as Megatron chooses, else int32
  const size_t w = size_t(dtype_width(dtype));
  uint64_t n = 0, lo = 0, hi = 0, mine = 0;
  std::vector<int32_t> sizes;
  const std::string part = dir + "/tokens-part-" + std::to_string(rank);
  agreed(true, [&] {
    const TokenStore bytes(dir);
    n = bytes.documents(), lo = n * uint64_t(rank) / uint64_t(size), hi = n * uint64_t(rank + 1) / uint64_t(size);
    OutFile out(part, true);
    std::string buf;
    double last = t_encode;
    for (uint64_t i = lo; i < hi; ++i) {
      const std::vector<int> ids = tk.encode(bytes.text(i));
      sizes.push_back(int32_t(ids.size()));
      for (int id : ids) {
        if (dtype == 8) {
          const uint16_t v = uint16_t(id);
          buf.append(reinterpret_cast<const char*>(&v), 2);
        } else {
          buf.append(reinterpret_cast<const char*>(&id), 4);
        }
      }
      if (buf.size() >= (size_t(1) << 20)) out.pwrite_all(buf.data(), buf.size(), mine * w), mine += buf.size() / w, buf.clear();
      if (const double now = MPI_Wtime(); rank == 0 && now - last > 5 && i + 1 < hi) {
        last = now;
        const double rate = double(i + 1 - lo) / (now - t_encode);
        std::printf("prepare: encoded %llu of %llu documents on rank 0 (%.0f/s), ETA %.0f s\n",
                    (unsigned long long)(i + 1 - lo), (unsigned long long)(hi - lo), rate, double(hi - i - 1) / rate);
        std::fflush(stdout);
      }
    }
    out.pwrite_all(buf.data(), buf.size(), mine * w), mine += buf.size() / w;
    out.finish();
  }, comm);

  // Offsets from every rank's token count; rank 0 sizes the files, each rank writes its part.
  std::vector<uint64_t> counts(size_t(size), 0);
  MPI_Allgather(&mine, 1, MPI_UINT64_T, counts.data(), 1, MPI_UINT64_T, comm);
  uint64_t base = 0, total = 0;
  for (int r = 0; r < size; ++r) base += r < rank ? counts[size_t(r)] : 0, total += counts[size_t(r)];
  const std::string bin = dir + "/tokens.bin", idx = dir + "/tokens.idx";
  agreed(rank == 0, [&] {
    OutFile i(idx, true);
    const std::string head = idx_header_bytes(IdxHeader{dtype, n, n + 1});
    i.pwrite_all(head.data(), head.size(), 0);
    const int64_t zero = 0;
    i.pwrite_all(&zero, 8, idx_doc_index_at(n));
    i.resize(idx_doc_index_at(n) + 8 * (n + 1));
    i.finish();
    OutFile b(bin, true);
    b.resize(total * w);
    b.finish();
  }, comm);
  agreed(true, [&] {
    OutFile b(bin, false);
    copy_part(part, b, base * w, mine * w);
    b.finish();
    fs::remove(part);
    std::vector<int64_t> ptr(sizes.size()), doc(sizes.size());
    uint64_t p = base * w;
    for (size_t k = 0; k < sizes.size(); ++k) ptr[k] = int64_t(p), p += uint64_t(sizes[k]) * w, doc[k] = int64_t(lo + k + 1);
    OutFile i(idx, false);
    i.pwrite_all(sizes.data(), 4 * sizes.size(), idx_sizes_at(n) + 4 * lo);
    i.pwrite_all(ptr.data(), 8 * ptr.size(), idx_pointers_at(n) + 8 * lo);
    i.pwrite_all(doc.data(), 8 * doc.size(), idx_doc_index_at(n) + 8 * (lo + 1));
    i.finish();
  }, comm);
  agreed(rank == 0, [&] {
    fs::rename(bin, dir + "/corpus.bin");
    fs::rename(idx, dir + "/corpus.idx");
  }, comm);

  EncodeReport r;
  r.tokenizer_hash = file_hash(model);
  r.tokens = total;
  r.meta = "tokens = sentencepiece\nvocab_size = " + std::to_string(tk.vocab_size()) + "\neod = " + std::to_string(tk.eod()) +
           "\ntokenizer = tokenizer.model\ntokenizer_hash = " + std::to_string(r.tokenizer_hash) +
           "\ntoken_count = " + std::to_string(total) + "\n";
  r.train_seconds = t_encode - t0, r.encode_seconds = MPI_Wtime() - t_encode;
  return r;
}

}  // namespace dipaco
