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
#include <optional>
#include <set>
#include <tuple>
#include <vector>

#include "dipaco/data/corpus.hpp"
#include "dipaco/data/encode.hpp"
#include "dipaco/data/input_files.hpp"
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

// What one rank read: its documents' sizes, ids, domains and flags; the text
// itself went to its part file as it was read.
struct Slice {
  std::vector<int32_t> sizes;
  std::vector<uint32_t> id_len, domain;  // domain: local index until remapped
  std::vector<uint8_t> val;
  std::vector<double> id_hash;  // unit_hash(id)
  std::string ids;
  std::vector<std::string> domains;  // local names
  std::vector<uint64_t> piece_hash;
  uint64_t bytes = 0, input_bytes = 0, empty = 0;
  // Token inputs: each document's byte offset in the store's address space
  // (Inputs::source_at), and the largest token id with where it is.
  std::vector<int64_t> ptr;
  int64_t max_token = -1;
  std::string max_at;
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

void read_slice(const PrepareOptions& o, const Inputs& in, size_t lo, size_t hi, const std::string& part, Slice& s,
                int rank, double t0) {
  std::optional<OutFile> out;  // token inputs stay where they are
  if (!in.tokens()) out.emplace(part, true);
  const size_t width = size_t(dtype_width(in.dtype));
  std::string buf;
  uint64_t at = 0;
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
      s.sizes.push_back(int32_t(d.text.size() / width));
      if (in.tokens()) {
        s.ptr.push_back(int64_t(in.source_at[size_t(piece.source)] + d.at));
        if (d.max_token > s.max_token) s.max_token = d.max_token, s.max_at = "document " + d.id;
      }
      s.id_len.push_back(uint32_t(d.id.size()));
      s.ids += d.id;
      auto [it, added] = local.emplace(d.domain, uint32_t(local.size()));
      if (added) s.domains.push_back(d.domain);
      s.domain.push_back(it->second);
      s.val.push_back(in.val[i] ? 1 : 0);
      s.id_hash.push_back(unit_hash(d.id));
      h = hash64(d.text, hash64(d.id, h));
      s.bytes += d.text.size();
      if (in.tokens()) return;
      buf += d.text;
      if (buf.size() >= (size_t(1) << 20)) out->pwrite_all(buf.data(), buf.size(), at), at += buf.size(), buf.clear();
    };
    if (piece.format == TokenFormat::text) read_piece(piece, io, take, &s.empty);
    else read_token_piece(piece, take, &s.empty);
    s.piece_hash.push_back(h);
    if (o.after_piece) o.after_piece();
    s.input_bytes += piece_size(in.pieces[i]);
    const double now = MPI_Wtime();
    if (rank == 0 && now - last > 5 && i + 1 < hi) {
      last = now;
      const double rate = s.input_bytes / std::max(now - t0, 1e-9);
      std::printf("prepare: %.0f of %.0f MB on rank 0 (%.0f MB/s), ETA %.0f s\n", s.input_bytes / 1e6, mine / 1e6, rate / 1e6,
                  (mine - s.input_bytes) / std::max(rate, 1.0));
      std::fflush(stdout);
    }
  }
  if (out) out->pwrite_all(buf.data(), buf.size(), at), out->finish();
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
// domains short of min_val_docs take their lowest-hash training documents.
void top_up_validation(const PrepareOptions& o, Slice& s, uint64_t base, size_t domains, MPI_Comm comm) {
  std::vector<long> val_n(domains, 0), train_n(domains, 0);
  for (size_t i = 0; i < s.val.size(); ++i) ++(s.val[i] ? val_n : train_n)[s.domain[i]];
  MPI_Allreduce(MPI_IN_PLACE, val_n.data(), int(domains), MPI_LONG, MPI_SUM, comm);
  MPI_Allreduce(MPI_IN_PLACE, train_n.data(), int(domains), MPI_LONG, MPI_SUM, comm);
  // Each rank's candidates: per needy domain its k lowest (hash, index) training documents.
  struct Cand {
    double hash;
    uint64_t index;
    uint64_t domain;
  };
  std::vector<std::vector<Cand>> best(domains);
  const size_t k = size_t(std::max(o.min_val_docs, 0));
  for (size_t i = 0; i < s.val.size(); ++i) {
    const uint32_t d = s.domain[i];
    if (s.val[i] || val_n[d] >= o.min_val_docs) continue;
    best[d].push_back({s.id_hash[i], base + i, d});
  }
  std::vector<Cand> mine;
  auto less = [](const Cand& a, const Cand& b) { return a.hash != b.hash ? a.hash < b.hash : a.index < b.index; };
  for (auto& b : best) {
    std::sort(b.begin(), b.end(), less);
    mine.insert(mine.end(), b.begin(), b.begin() + std::min(k, b.size()));
  }
  const std::vector<Cand> all = gather_rows(mine, 1, true, comm, "gathering the validation candidates");
  std::vector<std::vector<Cand>> per(domains);
  for (auto& c : all) per[c.domain].push_back(c);
  for (size_t d = 0; d < domains; ++d) {
    std::sort(per[d].begin(), per[d].end(), less);
    long have = val_n[d];
    for (size_t j = 0; have < o.min_val_docs && long(j) + 1 < train_n[d] && j < per[d].size(); ++j, ++have)
      if (per[d][j].index >= base && per[d][j].index < base + s.val.size()) s.val[per[d][j].index - base] = 1;
  }
}

// Ids must be unique (the split and the shard files name documents by them):
// each id's hash goes to one rank, which counts repeats.
void refuse_duplicate_ids(const Slice& s, uint64_t base, MPI_Comm comm) {
  int rank, size;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  std::vector<std::vector<uint64_t>> out(size);
  size_t off = 0;
  for (size_t i = 0; i < s.id_len.size(); ++i) {
    const uint64_t h = hash64(std::string_view(s.ids.data() + off, s.id_len[i]), 7);
    off += s.id_len[i];
    out[h % uint64_t(size)].push_back(h), out[h % uint64_t(size)].push_back(base + i);
  }
  std::vector<int> sc(size), rc(size), sd(size), rd(size);
  std::vector<uint64_t> send;
  for (int r = 0; r < size; ++r) sd[r] = int(send.size()), sc[r] = int(out[r].size()), send.insert(send.end(), out[r].begin(), out[r].end());
  MPI_Alltoall(sc.data(), 1, MPI_INT, rc.data(), 1, MPI_INT, comm);
  int total = 0;
  for (int r = 0; r < size; ++r) rd[r] = total, total += rc[r];
  std::vector<uint64_t> recv(static_cast<size_t>(total));
  MPI_Alltoallv(send.data(), sc.data(), sd.data(), MPI_UINT64_T, recv.data(), rc.data(), rd.data(), MPI_UINT64_T, comm);
  std::vector<std::pair<uint64_t, uint64_t>> pairs;
  for (size_t i = 0; i + 1 < recv.size(); i += 2) pairs.emplace_back(recv[i], recv[i + 1]);
  std::sort(pairs.begin(), pairs.end());
  uint64_t repeats = 0, first = UINT64_MAX;
  for (size_t i = 1; i < pairs.size(); ++i)
    if (pairs[i].first == pairs[i - 1].first) ++repeats, first = std::min(first, pairs[i].second);
  MPI_Allreduce(MPI_IN_PLACE, &repeats, 1, MPI_UINT64_T, MPI_SUM, comm);
  MPI_Allreduce(MPI_IN_PLACE, &first, 1, MPI_UINT64_T, MPI_MIN, comm);
  if (repeats == 0) return;
  // The rank holding the first repeat names its id.
  std::string id;
  if (first >= base && first < base + s.id_len.size()) {
    size_t o = 0;
    for (size_t i = 0; i < first - base; ++i) o += s.id_len[i];
    id = s.ids.substr(o, s.id_len[first - base]);
  }
  id = first_error(id, comm);
  throw CorpusError(std::to_string(repeats) + " duplicate document id(s) in the corpus (the first repeat: '" + id +
                    "', document " + std::to_string(first + 1) + "); ids must be unique (drop the id key from the lines to "
                    "use file:line ids)");
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
    read_slice(o, in, lo, hi, tmp + "/part-" + std::to_string(rank) + ".bin", s, rank, t0);
  } catch (const CorpusError& e) {
    error = e.what();
  } catch (const std::exception& e) {
    failure = e.what();
  }
  if (auto e = first_error(failure, comm); !e.empty()) throw WriteError(e + "; no store was written (" + dir + " is unchanged)");
  if (auto e = first_error(error, comm); !e.empty()) throw CorpusError(e);

  // Where this rank's documents go: every rank's counts.
  const uint64_t n_mine = s.sizes.size();
  uint64_t mine[3] = {n_mine, s.bytes, uint64_t(s.ids.size())};
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
  for (auto& d : s.domain) d = remap[d];

  refuse_duplicate_ids(s, base[0], comm);
  if (o.val.empty()) {
    for (size_t i = 0; i < n_mine; ++i) s.val[i] = s.id_hash[i] < o.val_fraction;
    top_up_validation(o, s, base[0], domains.size(), comm);
  }

  // The files at their final sizes (rank 0), then every rank writes its part.
  const uint64_t N = total[0];
  if (rank == 0) {
    try {
      OutFile idx(tmp + "/corpus.idx", true);
      const std::string head = idx_header_bytes(IdxHeader{in.dtype, N, N + 1});
      idx.pwrite_all(head.data(), head.size(), 0);
      const int64_t zero = 0;
      idx.pwrite_all(&zero, 8, idx_doc_index_at(N));
      idx.resize(idx_doc_index_at(N) + 8 * (N + 1));
      idx.finish();
      for (auto [name, bytes] : {std::pair<const char*, uint64_t>{"corpus.bin", total[1]}, {"docs.bin", N * sizeof(DocRecord)}, {"ids.bin", total[2]}}) {
        if (in.tokens() && name == std::string("corpus.bin")) continue;
        OutFile f(tmp + "/" + name, true);
        f.resize(bytes);
        f.finish();
      }
    } catch (const std::exception& e) {
      error = e.what();
    }
  }
  if (auto e = first_error(error, comm); !e.empty()) throw WriteError(e);
  try {
    if (!in.tokens()) {
      OutFile bin(tmp + "/corpus.bin", false);
      const std::string part = tmp + "/part-" + std::to_string(rank) + ".bin";
      copy_part(part, bin, base[1], s.bytes);
      bin.finish();
      fs::remove(part);
    }
    {
      OutFile idx(tmp + "/corpus.idx", false);
      std::vector<int64_t> ptr(n_mine), doc(n_mine);
      uint64_t p = base[1];
      for (size_t i = 0; i < n_mine; ++i) ptr[i] = int64_t(p), p += uint64_t(s.sizes[i]), doc[i] = int64_t(base[0] + i + 1);
      if (in.tokens()) ptr = s.ptr;
      idx.pwrite_all(s.sizes.data(), 4 * n_mine, idx_sizes_at(N) + 4 * base[0]);
      idx.pwrite_all(ptr.data(), 8 * n_mine, idx_pointers_at(N) + 8 * base[0]);
      idx.pwrite_all(doc.data(), 8 * n_mine, idx_doc_index_at(N) + 8 * (base[0] + 1));
      idx.finish();
    }
    {
      std::vector<DocRecord> rec(n_mine);
      uint64_t off = base[2];
      for (size_t i = 0; i < n_mine; ++i) rec[i] = {off, s.id_len[i], s.domain[i] << 1 | s.val[i]}, off += s.id_len[i];
      OutFile docs(tmp + "/docs.bin", false);
      docs.pwrite_all(rec.data(), rec.size() * sizeof(DocRecord), base[0] * sizeof(DocRecord));
      docs.finish();
      OutFile ids(tmp + "/ids.bin", false);
      ids.pwrite_all(s.ids.data(), s.ids.size(), base[2]);
      ids.finish();
    }
  } catch (const std::exception& e) {
    error = e.what();
  }
  if (auto e = first_error(error, comm); !e.empty()) throw WriteError(e);

  // The content hash over the pieces in input order (the same at any rank count).
  const std::vector<uint64_t> hashes = gather_rows(s.piece_hash, 1, true, comm, "gathering the pieces' hashes");
  uint64_t content = 0;
  for (uint64_t h : hashes) content = hash64(std::string_view(reinterpret_cast<const char*>(&h), 8), content);
  uint64_t counted[3] = {0, s.input_bytes, s.empty};
  for (size_t i = 0; i < n_mine; ++i) counted[0] += s.val[i];
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
