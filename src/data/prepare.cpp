#include "dipaco/data/prepare.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <tuple>
#include <vector>

#include "dipaco/data/corpus.hpp"
#include "dipaco/data/encode.hpp"
#include "dipaco/data/input_files.hpp"
#include "dipaco/data/read_records.hpp"
#include "dipaco/data/store_files.hpp"
#include "dipaco/data/token_inputs.hpp"
#include "dipaco/data/token_store.hpp"
#include "dipaco/dist/first_error.hpp"
#include "dipaco/dist/gather_rows.hpp"
#include "dipaco/io/files.hpp"

namespace fs = std::filesystem;

namespace dipaco {

namespace {

struct Inputs {
  std::vector<InputPiece> pieces;
  std::vector<bool> val;  // per piece: from data.val
  // Token inputs: the files read in place, and where each starts in the store's
  // address space (the files one after another, headers and all).
  std::vector<std::string> sources;
  std::vector<uint64_t> source_at;
  uint8_t dtype = 1;
  bool tokens() const { return !sources.empty(); }
};

Inputs plan(const PrepareOptions& o) {
  Inputs in;
  std::set<std::string> token_files;
  bool text = false;
  auto add = [&](const std::string& spec, bool val) {
    std::vector<std::string> plain;
    for (const auto& f : expand_inputs(spec)) {
      const TokenFormat format = token_format(f);
      if (format == TokenFormat::text) {
        plain.push_back(f), text = true;
        continue;
      }
      const std::string bin = megatron_bin(f);
      if (!token_files.insert(bin).second) continue;  // PREFIX.bin and PREFIX.idx
      const int source = int(in.sources.size());
      in.sources.push_back(fs::absolute(bin).lexically_normal().string());
      in.source_at.push_back(source ? in.source_at.back() + fs::file_size(in.sources[source - 1]) : 0);
      for (auto& p : plan_token_pieces(bin, format, source, o.piece_bytes, o.eot_token)) {
        if (!in.pieces.empty() && in.pieces.back().format != TokenFormat::text && p.dtype != in.pieces.back().dtype)
          throw CorpusError(bin + ": tokens of " + std::to_string(dtype_width(p.dtype)) + " bytes, " +
                            in.pieces.back().file + "'s of " + std::to_string(dtype_width(in.pieces.back().dtype)) +
                            " (one store holds one token width)");
        in.dtype = p.dtype;
        in.pieces.push_back(p), in.val.push_back(val);
      }
    }
    if (!plain.empty())
      for (auto& p : plan_pieces(plain, o.piece_bytes)) in.pieces.push_back(p), in.val.push_back(val);
  };
  add(o.corpus, false);
  if (!o.val.empty()) add(o.val, true);
  if (text && in.tokens())
    throw CorpusError("data.corpus / data.val mix JSONL text with token files (" + in.sources[0] +
                      "): a run reads one or the other");
  return in;
}

uint64_t piece_size(const InputPiece& p) {
  if (p.format != TokenFormat::text) return p.bytes;
  if (!p.compressed) return p.end - p.begin;
  std::error_code ec;
  const auto n = fs::file_size(p.file, ec);
  return ec ? 0 : uint64_t(n);
}

// Pieces [lo, hi) of rank r: contiguous runs of about equal input bytes.
std::pair<size_t, size_t> my_pieces(const Inputs& in, int rank, int size) {
  std::vector<uint64_t> at{0};
  for (auto& p : in.pieces) at.push_back(at.back() + piece_size(p));
  auto first = [&](int r) {
    const uint64_t target = uint64_t((unsigned __int128)at.back() * unsigned(r) / unsigned(size));
    return size_t(std::lower_bound(at.begin(), at.end() - 1, target) - at.begin());
  };
  return {first(rank), rank + 1 == size ? in.pieces.size() : first(rank + 1)};
}

// What one rank read: its documents' records and ids in part files (read_records.hpp),
// the text itself in a third as it was read; in memory only counts and names.
struct Slice {
  std::string dir;
  int rank = 0;
  std::unique_ptr<RecordFile> records;
  uint64_t id_bytes = 0;
  std::vector<std::string> domains;  // local names
  std::vector<uint64_t> piece_hash;
  uint64_t bytes = 0, input_bytes = 0, empty = 0;
  int64_t max_token = -1;  // token inputs: the largest token id, and where it is
  std::string max_at;
  std::string part(const char* what) const { return dir + "/" + what + "-" + std::to_string(rank) + ".bin"; }
  uint64_t docs() const { return records->size(); }
};

// Each piece's first line number: every rank counts the lines of its own plain
// pieces (one memchr pass), the counts are summed over the pieces before it in
// its file. Ids of documents without one ("file:line") need it.
void number_lines(Inputs& in, size_t lo, size_t hi, MPI_Comm comm) {
  std::vector<uint64_t> lines(in.pieces.size(), 0);
  std::string error;
  try {
    for (size_t i = lo; i < hi; ++i)
      if (in.pieces[i].format == TokenFormat::text) lines[i] = count_piece_lines(in.pieces[i]);
  } catch (const std::exception& e) {
    error = e.what();
  }
  if (auto e = first_error(error, comm); !e.empty()) throw CorpusError(e);
  MPI_Allreduce(MPI_IN_PLACE, lines.data(), int(lines.size()), MPI_UINT64_T, MPI_SUM, comm);
  uint64_t before = 0;
  for (size_t i = 0; i < in.pieces.size(); ++i) {
    if (i == 0 || in.pieces[i].file != in.pieces[i - 1].file) before = 0;
    in.pieces[i].lines_before = int64_t(before);
    before += lines[i];
  }
}

void read_slice(const PrepareOptions& o, const Inputs& in, size_t lo, size_t hi, Slice& s, double t0) {
  std::optional<Appender> text;  // token inputs stay where they are
  if (!in.tokens()) text.emplace(s.part("part"));
  Appender ids(s.part("ids"));
  s.records = std::make_unique<RecordFile>(s.part("records"));
  const size_t width = size_t(dtype_width(in.dtype));
  std::map<std::string, uint32_t> local;
  InputOptions io;
  io.domain_key = o.domain_key;
  uint64_t mine = 0;
  for (size_t i = lo; i < hi; ++i) mine += piece_size(in.pieces[i]);
  double last = t0;
  for (size_t i = lo; i < hi; ++i) {
    uint64_t h = 0;
    const InputPiece& piece = in.pieces[i];
    auto take = [&](InputDocument&& d) {
      if (d.text.size() / width >= size_t(1) << 31) throw CorpusError(d.id + ": a document of 2^31 tokens or more");
      ReadRecord r;
      r.size = int32_t(d.text.size() / width);
      if (in.tokens()) {
        r.ptr = int64_t(in.source_at[size_t(piece.source)] + d.at);
        if (d.max_token > s.max_token) s.max_token = d.max_token, s.max_at = "document " + d.id;
      }
      r.id_len = uint32_t(d.id.size());
      r.id_key = hash64(d.id, 7);
      r.id_hash = unit_hash(d.id);
      auto [it, added] = local.emplace(d.domain, uint32_t(local.size()));
      if (added) s.domains.push_back(d.domain);
      r.domain = it->second;
      r.val = in.val[i] ? 1 : 0;
      s.records->push(r);
      ids.append(d.id);
      h = bulk_hash64(d.text, hash64(d.id, h));
      s.bytes += d.text.size();
      if (text) text->append(d.text);
    };
    if (piece.format == TokenFormat::text) read_piece(piece, io, take, &s.empty);
    else read_token_piece(piece, take, &s.empty);
    s.piece_hash.push_back(h);
    if (o.after_piece) o.after_piece();
    s.input_bytes += piece_size(in.pieces[i]);
    const double now = MPI_Wtime();
    if (s.rank == 0 && now - last > 5 && i + 1 < hi) {
      last = now;
      const double rate = s.input_bytes / std::max(now - t0, 1e-9);
      std::printf("prepare: %.0f of %.0f MB on rank 0 (%.0f MB/s), ETA %.0f s\n", s.input_bytes / 1e6, mine / 1e6, rate / 1e6,
                  (mine - s.input_bytes) / std::max(rate, 1.0));
      std::fflush(stdout);
    }
  }
  s.records->flush();
  s.id_bytes = ids.size();
  ids.finish();
  if (text) text->finish();
}

// Every rank's strings, in rank order.
std::vector<std::string> allgather_strings(const std::vector<std::string>& mine, MPI_Comm comm) {
  std::vector<char> packed;
  for (auto& s : mine) packed.insert(packed.end(), s.begin(), s.end()), packed.push_back('\0');
  const std::vector<char> all = gather_rows(packed, 1, true, comm, "gathering every rank's strings");
  std::vector<std::string> out;
  for (auto i = all.begin(); i != all.end();) {
    const auto j = std::find(i, all.end(), '\0');
    out.emplace_back(i, j);
    i = j + 1;
  }
  return out;
}

// The split rule of split_corpus (corpus.hpp) over every rank's documents:
// held out when unit_hash(id) < val_fraction; domains short of min_val_docs
// take their lowest-hash training documents.
void split_slice(const PrepareOptions& o, Slice& s, uint64_t base, size_t domains, MPI_Comm comm) {
  std::vector<long> val_n(domains, 0), train_n(domains, 0);
  s.records->each_block([&](uint64_t, std::vector<ReadRecord>& b) {
    for (auto& r : b) r.val = r.id_hash < o.val_fraction, ++(r.val ? val_n : train_n)[r.domain];
  }, true);
  MPI_Allreduce(MPI_IN_PLACE, val_n.data(), int(domains), MPI_LONG, MPI_SUM, comm);
  MPI_Allreduce(MPI_IN_PLACE, train_n.data(), int(domains), MPI_LONG, MPI_SUM, comm);
  bool needy = false;
  for (size_t d = 0; d < domains; ++d) needy |= val_n[d] < o.min_val_docs;
  if (!needy) return;  // the same answer on every rank: the counts are global
  // Each rank's candidates: per needy domain its k lowest (hash, index)
  // training documents, kept in a bounded heap while the records stream by.
  struct Cand {
    double hash;
    uint64_t index;
    uint64_t domain;
  };
  auto less = [](const Cand& a, const Cand& b) { return a.hash != b.hash ? a.hash < b.hash : a.index < b.index; };
  const size_t k = size_t(std::max(o.min_val_docs, 0));
  std::vector<std::vector<Cand>> best(domains);  // max-heaps by `less`
  s.records->each_block([&](uint64_t first, std::vector<ReadRecord>& b) {
    for (size_t i = 0; i < b.size(); ++i) {
      const uint32_t d = b[i].domain;
      if (b[i].val || val_n[d] >= o.min_val_docs || k == 0) continue;
      const Cand c{b[i].id_hash, base + first + i, d};
      auto& h = best[d];
      if (h.size() < k) h.push_back(c), std::push_heap(h.begin(), h.end(), less);
      else if (less(c, h.front())) std::pop_heap(h.begin(), h.end(), less), h.back() = c, std::push_heap(h.begin(), h.end(), less);
    }
  });
  std::vector<Cand> mine;
  for (auto& b : best) mine.insert(mine.end(), b.begin(), b.end());
  const std::vector<Cand> all = gather_rows(mine, 1, true, comm, "gathering the validation candidates");
  std::vector<std::vector<Cand>> per(domains);
  for (auto& c : all) per[c.domain].push_back(c);
  std::vector<uint64_t> chosen;  // this rank's, ascending
  for (size_t d = 0; d < domains; ++d) {
    std::sort(per[d].begin(), per[d].end(), less);
    long have = val_n[d];
    for (size_t j = 0; have < o.min_val_docs && long(j) + 1 < train_n[d] && j < per[d].size(); ++j, ++have)
      if (per[d][j].index >= base && per[d][j].index < base + s.docs()) chosen.push_back(per[d][j].index - base);
  }
  std::sort(chosen.begin(), chosen.end());
  s.records->each_block([&](uint64_t first, std::vector<ReadRecord>& b) {
    auto it = std::lower_bound(chosen.begin(), chosen.end(), first);
    for (; it != chosen.end() && *it < first + b.size(); ++it) b[*it - first].val = 1;
  }, true);
}

// Ids must be unique (the split and the shard files name documents by them):
// each id's hash goes to one rank, which counts repeats. In rounds, each a
// share of the hash space, so that a rank holds about kRound hashes at once.
void refuse_duplicate_ids(Slice& s, uint64_t base, uint64_t total, MPI_Comm comm) {
  constexpr uint64_t kRound = 65536;
  int rank, size;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  const uint64_t rounds = std::max<uint64_t>(1, (total + kRound * uint64_t(size) - 1) / (kRound * uint64_t(size)));
  uint64_t repeats = 0, first = UINT64_MAX;
  for (uint64_t round = 0; round < rounds; ++round) {
    std::vector<std::vector<uint64_t>> out(size);
    s.records->each_block([&](uint64_t at, std::vector<ReadRecord>& b) {
      for (size_t i = 0; i < b.size(); ++i) {
        const uint64_t h = b[i].id_key;
        if ((h / uint64_t(size)) % rounds != round) continue;
        auto& o = out[h % uint64_t(size)];
        o.push_back(h), o.push_back(base + at + i);
      }
    });
    std::vector<int> sc(size), rc(size), sd(size), rd(size);
    std::vector<uint64_t> send;
    for (int r = 0; r < size; ++r)
      sd[r] = int(send.size()), sc[r] = int(out[r].size()), send.insert(send.end(), out[r].begin(), out[r].end());
    out = {};
    MPI_Alltoall(sc.data(), 1, MPI_INT, rc.data(), 1, MPI_INT, comm);
    int got = 0;
    for (int r = 0; r < size; ++r) rd[r] = got, got += rc[r];
    std::vector<uint64_t> recv(static_cast<size_t>(got));
    MPI_Alltoallv(send.data(), sc.data(), sd.data(), MPI_UINT64_T, recv.data(), rc.data(), rd.data(), MPI_UINT64_T, comm);
    send = {};
    std::vector<std::pair<uint64_t, uint64_t>> pairs;
    pairs.reserve(recv.size() / 2);
    for (size_t i = 0; i + 1 < recv.size(); i += 2) pairs.emplace_back(recv[i], recv[i + 1]);
    recv = {};
    std::sort(pairs.begin(), pairs.end());
    for (size_t i = 1; i < pairs.size(); ++i)
      if (pairs[i].first == pairs[i - 1].first) ++repeats, first = std::min(first, pairs[i].second);
  }
  MPI_Allreduce(MPI_IN_PLACE, &repeats, 1, MPI_UINT64_T, MPI_SUM, comm);
  MPI_Allreduce(MPI_IN_PLACE, &first, 1, MPI_UINT64_T, MPI_MIN, comm);
  if (repeats == 0) return;
  // The rank holding the first repeat names its id.
  std::string id;
  if (first >= base && first < base + s.docs()) {
    uint64_t off = 0, len = 0;
    s.records->each_block([&](uint64_t at, std::vector<ReadRecord>& b) {
      for (size_t i = 0; i < b.size() && at + i <= first - base; ++i) (at + i == first - base ? len : off) += b[i].id_len;
    });
    id = std::string(len, '\0');
    const int fd = ::open(s.part("ids").c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0 || ::pread(fd, id.data(), len, off_t(off)) != ssize_t(len)) id = "?";
    if (fd >= 0) ::close(fd);
  }
  id = first_error(id, comm);
  throw CorpusError(std::to_string(repeats) + " duplicate document id(s) in the corpus (the first repeat: '" + id +
                    "', document " + std::to_string(first + 1) + "); ids must be unique (drop the id key from the lines to "
                    "use file:line ids)");
}

// A rank's part file into the store's file at `at`: rank 0's part becomes the
// file (renamed, then sized to `total`: no copy), the others are copied in
// after it exists. Collective.
void join_parts(const std::string& part, const std::string& file, uint64_t at, uint64_t bytes, uint64_t total, int rank,
                MPI_Comm comm) {
  agreed(rank == 0, [&] {
    fs::rename(part, file);
    OutFile f(file, false);
    f.resize(total);
    f.finish();
  }, comm);
  agreed(rank != 0, [&] {
    OutFile f(file, false);
    copy_part(part, f, at, bytes);
    f.finish();
    fs::remove(part);
  }, comm);
}

// The store's index (sizes, pointers, document index) and records for this
// rank's documents, a block of records at a time; returns its validation documents.
uint64_t write_index(Slice& s, const Inputs& in, const std::string& tmp, uint64_t N, const uint64_t base[3]) {
  OutFile idx(tmp + "/corpus.idx", false), docs(tmp + "/docs.bin", false);
  uint64_t p = base[1], id_off = base[2], val = 0;
  s.records->each_block([&](uint64_t first, std::vector<ReadRecord>& b) {
    const size_t n = b.size();
    const uint64_t at = base[0] + first;
    std::vector<int32_t> sizes(n);
    std::vector<int64_t> ptr(n), doc(n);
    std::vector<DocRecord> rec(n);
    for (size_t i = 0; i < n; ++i) {
      sizes[i] = b[i].size;
      ptr[i] = in.tokens() ? b[i].ptr : int64_t(p);
      p += uint64_t(b[i].size);
      doc[i] = int64_t(at + i + 1);
      rec[i] = {id_off, b[i].id_len, b[i].domain << 1 | b[i].val};
      id_off += b[i].id_len, val += b[i].val;
    }
    idx.pwrite_all(sizes.data(), 4 * n, idx_sizes_at(N) + 4 * at);
    idx.pwrite_all(ptr.data(), 8 * n, idx_pointers_at(N) + 8 * at);
    idx.pwrite_all(doc.data(), 8 * n, idx_doc_index_at(N) + 8 * (at + 1));
    docs.pwrite_all(rec.data(), n * sizeof(DocRecord), at * sizeof(DocRecord));
  });
  idx.finish();
  docs.finish();
  return val;
}

}  // namespace

std::string input_identity(const PrepareOptions& o) {
  uint64_t h = hash64(o.corpus + "\n" + o.val), bytes = 0;
  size_t files = 0;
  for (const std::string* spec : {&o.corpus, &o.val}) {
    if (spec->empty()) continue;
    for (const auto& f : expand_inputs(*spec)) {
      struct stat st {};
      if (::stat(f.c_str(), &st) != 0) throw CorpusError("cannot open input file '" + f + "': " + std::strerror(errno));
      h = hash64(f + "\n" + std::to_string(st.st_size) + "\n" + std::to_string(st.st_mtim.tv_sec) + "." +
                     std::to_string(st.st_mtim.tv_nsec),
                 h);
      bytes += uint64_t(st.st_size), ++files;
    }
  }
  return "data.inputs = " + std::to_string(files) + " file(s), " + std::to_string(bytes) + " bytes, " + std::to_string(h) + "\n";
}

PrepareReport prepare_store(const PrepareOptions& o, const std::string& dir, const std::string& stamp, MPI_Comm comm) {
  int rank, size;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  const double t0 = MPI_Wtime();
  const std::string tmp = dir + ".tmp";
  std::string error;
  if (rank == 0) {
    std::error_code ec;
    fs::remove_all(tmp, ec);  // an unfinished prepare is never trusted
    fs::create_directories(tmp, ec);
    if (ec) error = "cannot create " + tmp + ": " + ec.message();
  }
  if (auto e = first_error(error, comm); !e.empty()) throw WriteError(e);
  Slice s;
  s.dir = tmp, s.rank = rank;
  Inputs in;
  size_t lo = 0, hi = 0;
  try {
    in = plan(o);
    if (o.sentencepiece && in.tokens())
      throw CorpusError("data.tokenizer = sentencepiece encodes text, but " + in.sources[0] + " holds tokens already");
    if (!o.decode_table.empty() && !in.tokens())
      throw CorpusError("data.decode_table = " + o.decode_table + " is for token files; data.corpus holds text");
    std::tie(lo, hi) = my_pieces(in, rank, size);
  } catch (const std::exception& e) {
    error = e.what();
  }
  if (auto e = first_error(error, comm); !e.empty()) throw CorpusError(e);
  number_lines(in, lo, hi, comm);
  std::string failure;  // a write (a full disk) or the system, not the input
  try {
    read_slice(o, in, lo, hi, s, t0);
  } catch (const CorpusError& e) {
    error = e.what();
  } catch (const std::exception& e) {
    failure = e.what();
  }
  if (auto e = first_error(failure, comm); !e.empty()) throw WriteError(e + "; no store was written (" + dir + " is unchanged)");
  if (auto e = first_error(error, comm); !e.empty()) throw CorpusError(e);

  // Where this rank's documents go: every rank's counts.
  const uint64_t n_mine = s.docs();
  uint64_t mine[3] = {n_mine, s.bytes, s.id_bytes};
  std::vector<uint64_t> all(3 * size_t(size));
  MPI_Allgather(mine, 3, MPI_UINT64_T, all.data(), 3, MPI_UINT64_T, comm);
  uint64_t base[3] = {0, 0, 0}, total[3] = {0, 0, 0};
  for (int r = 0; r < size; ++r)
    for (int k = 0; k < 3; ++k) (r < rank ? base[k] += all[3 * r + k] : 0), total[k] += all[3 * r + k];
  if (total[0] == 0) throw CorpusError("the corpus '" + o.corpus + "' holds no documents (every text is empty)");

  // One sorted domain table; this rank's indices remapped into it.
  std::set<std::string> names;
  for (auto& d : allgather_strings(s.domains, comm)) names.insert(d);
  const std::vector<std::string> domains(names.begin(), names.end());
  std::vector<uint32_t> remap;
  for (auto& d : s.domains) remap.push_back(uint32_t(std::lower_bound(domains.begin(), domains.end(), d) - domains.begin()));
  s.records->each_block([&](uint64_t, std::vector<ReadRecord>& b) {
    for (auto& r : b) r.domain = remap[r.domain];
  }, true);

  refuse_duplicate_ids(s, base[0], total[0], comm);
  if (o.val.empty()) split_slice(o, s, base[0], domains.size(), comm);

  // The index at its final size (rank 0), then every rank writes its part.
  const uint64_t N = total[0];
  agreed(rank == 0, [&] {
    OutFile idx(tmp + "/corpus.idx", true);
    const std::string head = idx_header_bytes(IdxHeader{in.dtype, N, N + 1});
    idx.pwrite_all(head.data(), head.size(), 0);
    const int64_t zero = 0;
    idx.pwrite_all(&zero, 8, idx_doc_index_at(N));
    idx.resize(idx_doc_index_at(N) + 8 * (N + 1));
    idx.finish();
    OutFile docs(tmp + "/docs.bin", true);
    docs.resize(N * sizeof(DocRecord));
    docs.finish();
  }, comm);
  if (!in.tokens()) join_parts(s.part("part"), tmp + "/corpus.bin", base[1], s.bytes, total[1], rank, comm);
  join_parts(s.part("ids"), tmp + "/ids.bin", base[2], s.id_bytes, total[2], rank, comm);
  uint64_t counted[3] = {0, s.input_bytes, s.empty};
  agreed(true, [&] { counted[0] = write_index(s, in, tmp, N, base); }, comm);
  s.records->remove();

  // The content hash over the pieces in input order (the same at any rank count).
  const std::vector<uint64_t> hashes = gather_rows(s.piece_hash, 1, true, comm, "gathering the pieces' hashes");
  uint64_t content = 0;
  for (uint64_t h : hashes) content = hash64(std::string_view(reinterpret_cast<const char*>(&h), 8), content);
  MPI_Allreduce(MPI_IN_PLACE, counted, 3, MPI_UINT64_T, MPI_SUM, comm);

  // Token inputs: the vocabulary the data needs, and its end-of-document token
  // (the format's or the deck's; for Megatron without one, a new id past the largest).
  int64_t max_token = s.max_token;
  MPI_Allreduce(MPI_IN_PLACE, &max_token, 1, MPI_INT64_T, MPI_MAX, comm);
  const std::string max_at = first_error(s.max_token == max_token && max_token >= 0 ? s.max_at : "", comm);
  std::string vocab = "tokens = bytes\nvocab_size = 256\neod = 0\n";
  std::vector<uint8_t> decode;  // each id's bytes (data.decode_table), kept as token_bytes.bin
  if (in.tokens()) {
    const int64_t eod = in.pieces[0].eod >= 0 ? in.pieces[0].eod : max_token + 1;
    vocab = "tokens = ids\nvocab_size = " + std::to_string(std::max(max_token, eod) + 1) + "\neod = " + std::to_string(eod) +
            "\nmax_token = " + std::to_string(max_token) + "\nmax_token_at = " + max_at + "\ntext = sources.txt\n";
    if (!o.decode_table.empty()) {
      agreed(rank == 0, [&] {  // rank 0 keeps it
        decode = read_decode_table(o.decode_table, int32_t(eod));
        if (int64_t(decode.size()) <= std::max(max_token, eod))
          throw CorpusError(o.decode_table + ": " + std::to_string(decode.size()) + " tokens, but the data holds token id " +
                            std::to_string(std::max(max_token, eod)) + " (" + max_at + ")");
      }, comm);
      vocab += "token_bytes = token_bytes.bin\n";
    }
  }

  PrepareReport rep;
  rep.documents = N, rep.val = counted[0], rep.train = N - counted[0], rep.bytes = total[1], rep.input_bytes = counted[1];
  rep.empty = counted[2];
  agreed(rank == 0, [&] {
    std::string dom;
    for (auto& d : domains) dom += escape_line(d) + "\n";
    write_file_atomic(tmp + "/domains.txt", dom);
    if (in.tokens()) {
      std::string src;
      for (auto& f : in.sources) src += escape_line(f) + "\n";
      write_file_atomic(tmp + "/sources.txt", src);
    }
    if (!decode.empty()) write_file_atomic(tmp + "/token_bytes.bin", std::string(decode.begin(), decode.end()));
    write_file_atomic(tmp + "/stamp.txt", stamp);
  }, comm);
  auto write_meta = [&] {
    write_file_atomic(tmp + "/meta.txt", "format = dipaco-store 1\ndocuments = " + std::to_string(N) + "\ntrain = " +
                                             std::to_string(rep.train) + "\nval = " + std::to_string(rep.val) +
                                             "\nbytes = " + std::to_string(rep.bytes) + "\ncontent_hash = " +
                                             std::to_string(content) + "\n" + vocab);
  };
  if (o.sentencepiece) {  // the byte store complete, then encoded in place (its meta read by every rank)
    agreed(rank == 0, write_meta, comm);
    const EncodeReport enc = encode_store(o, tmp, comm);
    vocab = enc.meta, rep.tokens = enc.tokens;
    rep.train_tokenizer_seconds = enc.train_seconds, rep.encode_seconds = enc.encode_seconds;
    content = hash64(std::to_string(enc.tokenizer_hash), content);  // another tokenizer: another corpus for the later stages
  }
  agreed(rank == 0, [&] {
    write_meta();
    std::error_code ec;
    fs::remove_all(dir, ec);
    fs::rename(tmp, dir);
  }, comm);
  rep.seconds = MPI_Wtime() - t0;
  return rep;
}

}  // namespace dipaco
