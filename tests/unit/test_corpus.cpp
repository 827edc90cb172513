// Corpus reading, the stable split and training windows.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "dipaco/data/corpus.hpp"
#include "dipaco/data/input_files.hpp"
#include "dipaco/data/shards.hpp"

using namespace dipaco;

namespace {
// A small corpus read whole (tests only), and views of its documents.
struct Owned {
  std::vector<InputDocument> docs;
  std::vector<Document> views() const {
    std::vector<Document> v;
    for (auto& d : docs) v.push_back({d.id, d.domain, d.text});
    return v;
  }
};
Owned read_all(const std::string& spec) {
  Owned o;
  for (auto& p : plan_pieces(expand_inputs(spec), 0)) read_piece(p, {}, [&](InputDocument&& d) { o.docs.push_back(std::move(d)); });
  return o;
}
}  // namespace

TEST(Corpus, EmbeddedCorpusSplitIsStableAndCoversEveryDomain) {
  const Owned owned = read_all(std::string(DIPACO_SOURCE_DIR) + "/inputs/corpus/embedded.jsonl");
  auto docs = owned.views();
  Split a = split_corpus(docs, 0.1, 2);
  std::map<std::string_view, int> val;
  for (const Document& d : a.val) ++val[d.domain];
  std::set<std::string_view> domains;
  for (auto& d : docs) domains.insert(d.domain);
  EXPECT_GE(domains.size(), 5u);
  for (auto& dom : domains) EXPECT_GE(val[dom], 2) << dom;
  // Adding documents never moves an existing one across the split.
  auto more = docs;
  more.push_back({"zz-new", "new", "text"});
  Split b = split_corpus(more, 0.1, 2);
  std::set<std::string_view> va, vb;
  for (const Document& d : a.val) va.insert(d.id);
  for (const Document& d : b.val) vb.insert(d.id);
  for (auto& id : va) EXPECT_TRUE(vb.count(id)) << id;
}

// A domain keeps one document for training, so a one-document domain has no
// validation document: the split names it (the run warns).
TEST(Corpus, SplitNamesDomainsWithoutValidation) {
  std::vector<Document> docs = {{"a1", "two", "x"}, {"a2", "two", "y"}, {"b1", "one", "z"}};
  Split s = split_corpus(docs, 0.0, 2);
  EXPECT_EQ(s.unvalidated, std::vector<std::string>{"one"});
  EXPECT_EQ(s.val.size(), 1u);
  EXPECT_TRUE(split_corpus(docs, 0.0, 0).val.empty());
}

TEST(Corpus, WindowsAreDeterministicAndInRange) {
  const std::string a(500, 'a'), b(300, 'b');
  std::vector<Document> docs = {{"a", "x", a}, {"b", "y", b}};
  TokenStream s = make_stream(DocList(docs));
  EXPECT_EQ(s.size(), 802u);
  EXPECT_EQ(s.at(500), 0);  // the end-of-document byte
  EXPECT_EQ(s.at(501), 'b');
  std::vector<int32_t> across(4);
  s.read(498, 4, across.data());
  EXPECT_EQ(across, (std::vector<int32_t>{'a', 'a', 0, 'b'}));
  std::vector<int32_t> t1(64), g1(64), t2(64), g2(64);
  sample_window(s, 64, 1, 0, 5, 3, t1.data(), g1.data());
  sample_window(s, 64, 1, 0, 5, 3, t2.data(), g2.data());
  EXPECT_EQ(t1, t2);
  for (int i = 0; i < 63; ++i) EXPECT_EQ(g1[i], t1[i + 1]);
  std::vector<size_t> starts;
  EXPECT_EQ(validation_windows(s, 64, 100, starts), 12);
  for (size_t st : starts) EXPECT_LE(st + 65, s.size());
}

// A stream shorter than the context gets one window, padded with end-of-document tokens after its own.
TEST(Corpus, ShortStreamHasOnePaddedWindow) {
  std::vector<Document> docs = {{"a", "x", "hello"}, {"b", "x", "you"}};
  const DocList list(docs);
  TokenStream s(list);  // "hello\0you\0": 10 tokens
  std::vector<size_t> starts;
  ASSERT_EQ(validation_windows(s, 64, 8, starts), 1);
  EXPECT_EQ(starts, std::vector<size_t>{0});
  std::vector<int32_t> tok(64), tgt(64);
  read_window(s, 0, 64, tok.data(), tgt.data());
  const std::string all("hello\0you\0", 10);
  for (size_t i = 0; i < 64; ++i) {
    EXPECT_EQ(tok[i], i < 10 ? uint8_t(all[i]) : 0) << i;
    EXPECT_EQ(tgt[i], i + 1 < 10 ? uint8_t(all[i + 1]) : 0) << i;
  }
  EXPECT_EQ(validation_windows(TokenStream(list.subset({1})), 64, 8, starts), 1);
}

// Segment shards' streams: training draws only the windows given, each read
// from its own document (tokens [start, start + T], the end token past its end).
TEST(Corpus, StreamWithWindowsSamplesOnlyThoseWindows) {
  std::string a, b(40, 'b');
  for (int i = 0; i < 200; ++i) a += char('A' + i % 26);
  std::vector<Document> docs = {{"a", "x", a}, {"b", "y", b}};
  const std::vector<WindowStart> given = {{0, 0}, {0, 100}, {1, 20}};
  TokenStream s(DocList(docs), given);
  const int T = 32;
  std::set<std::string> seen;
  std::vector<int32_t> tok(T), tgt(T);
  for (int seq = 0; seq < 200; ++seq) {
    sample_window(s, T, 7, 3, 11, seq, tok.data(), tgt.data());
    std::string got(tok.begin(), tok.end());
    got += char(tgt[T - 1]);
    for (int i = 0; i + 1 < T; ++i) ASSERT_EQ(tgt[i], tok[i + 1]);
    const bool first = got == a.substr(0, T + 1), second = got == a.substr(100, T + 1);
    const bool third = got == b.substr(20) + std::string(1, '\0') + std::string(T + 1 - 21, '\0');
    ASSERT_TRUE(first || second || third) << got;
    seen.insert(got);
  }
  EXPECT_EQ(seen.size(), 3u) << "every window is drawn";
  EXPECT_THROW(TokenStream(DocList(docs), {{2, 0}}), std::runtime_error);
}

TEST(Shards, HashAndDomainRules) {
  std::vector<Document> docs;
  std::vector<std::string> ids;
  for (int i = 0; i < 40; ++i) ids.push_back("d" + std::to_string(i));
  for (int i = 0; i < 40; ++i) docs.push_back({ids[i], i % 2 ? "code" : "prose", "t"});
  const DocList list(docs);
  auto h = shards_of(list, assign_by_rule(list, 4, RouteMethod::hash));
  size_t n = 0;
  for (auto& s : h) {
    n += s.size();
    EXPECT_GT(s.size(), 0u);
  }
  EXPECT_EQ(n, 40u);
  auto d = shards_of(list, assign_by_rule(list, 2, RouteMethod::domain));
  for (const Document& x : d[0]) EXPECT_EQ(x.domain, "code");
  for (const Document& x : d[1]) EXPECT_EQ(x.domain, "prose");
}

// The store's content hash must see every byte: one flipped bit anywhere, a
// trailing zero byte or a changed seed gives another value, at every length
// around the 32- and 8-byte strides.
TEST(Corpus, BulkHashSeesEveryByteAndTheLength) {
  std::string s;
  for (int i = 0; i < 100; ++i) s += char('a' + i % 26);
  std::set<uint64_t> seen;
  size_t made = 0;
  for (size_t n = 0; n <= s.size(); ++n) {
    const std::string_view v(s.data(), n);
    seen.insert(bulk_hash64(v)), ++made;
    seen.insert(bulk_hash64(v, 1)), ++made;
    seen.insert(bulk_hash64(std::string(v) + '\0')), ++made;
    for (size_t i = 0; i < n; i += 3) {
      std::string t(v);
      t[i] ^= char(1 << (i % 8));
      seen.insert(bulk_hash64(t)), ++made;
    }
  }
  EXPECT_EQ(seen.size(), made);
  EXPECT_EQ(bulk_hash64(s, 5), bulk_hash64(std::string(s), 5));  // a function of the bytes only
}
