// Corpus reading, the stable split and training windows.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "dipaco/data/corpus.hpp"
#include "dipaco/data/shards.hpp"

using namespace dipaco;

TEST(Corpus, ParsesEscapesAndUnicode) {
  Document d = parse_document(R"({"id": "a\/1", "domain": "x", "n": 3, "text": "l1\nl2 \"q\" \u00e9\ud83d\ude00"})", "t");
  EXPECT_EQ(d.id, "a/1");
  EXPECT_EQ(d.text, "l1\nl2 \"q\" \xc3\xa9\xf0\x9f\x98\x80");
}

TEST(Corpus, ClearErrors) {
  auto err = [](const std::string& line) {
    try {
      parse_document(line, "f.jsonl:7");
    } catch (const CorpusError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(err(R"({"id":"a","domain":"x"})").find("missing field 'text'"), std::string::npos);
  EXPECT_NE(err(R"({"id":"a","domain":"x","text":"abc)").find("unterminated string"), std::string::npos);
  EXPECT_NE(err(R"({"id":1,"domain":"x","text":"t"})").find("must be a string"), std::string::npos);
  EXPECT_NE(err("not json").find("f.jsonl:7"), std::string::npos);
  EXPECT_NE(err(R"({"id":"a","domain":"x","text":"t"} trailing)").find("trailing"), std::string::npos);
}

TEST(Corpus, SkipsNestedValuesOfOtherFields) {
  Document d = parse_document(R"({"id":"a","meta":{"tags":["x,y",{"z":[1,2]}],"n":-1.5e3},"ok":true,"domain":"d","text":"t"})", "t");
  EXPECT_EQ(d.id, "a");
  EXPECT_EQ(d.domain, "d");
  EXPECT_EQ(d.text, "t");
  std::string deep = R"({"id":"a","x":)" + std::string(100, '[') + std::string(100, ']') + "}";
  try {
    parse_document(deep, "f.jsonl:3");
    FAIL();
  } catch (const CorpusError& e) {
    EXPECT_NE(std::string(e.what()).find("f.jsonl:3: nesting deeper than 32 levels"), std::string::npos) << e.what();
  }
}

// A corpus line is read whole: past kMaxCorpusLine the reader stops with an
// error instead of growing the line until memory runs out.
TEST(Corpus, OverlongLineRefusedWithFileAndLine) {
  std::string text = R"({"id":"a","domain":"d","text":"ok"})" "\n";
  text += R"({"id":"b","domain":"d","text":")" + std::string(kMaxCorpusLine, 'x') + "\"}\n";
  std::istringstream in(text);
  try {
    read_corpus(in, "big.jsonl");
    FAIL();
  } catch (const CorpusError& e) {
    EXPECT_NE(std::string(e.what()).find("big.jsonl:2: line longer than 64 MB"), std::string::npos) << e.what();
  }
}

TEST(Corpus, EmptyDocumentsAndBlankLinesAreSkipped) {
  std::istringstream in("\n  \r\n{\"id\":\"a\",\"domain\":\"d\",\"text\":\"\"}\n{\"id\":\"b\",\"domain\":\"d\",\"text\":\"x\"}");
  auto docs = read_corpus(in, "c.jsonl");
  ASSERT_EQ(docs.size(), 1u);
  EXPECT_EQ(docs[0].id, "b");
  std::istringstream none("{\"id\":\"a\",\"domain\":\"d\",\"text\":\"\"}\n");
  EXPECT_THROW(read_corpus(none, "c.jsonl"), CorpusError);
}

TEST(Corpus, MissingFileSaysWhichPath) {
  try {
    read_corpus("/no/such/corpus.jsonl");
    FAIL();
  } catch (const CorpusError& e) {
    EXPECT_NE(std::string(e.what()).find("/no/such/corpus.jsonl"), std::string::npos);
  }
}

TEST(Corpus, EmbeddedCorpusSplitIsStableAndCoversEveryDomain) {
  auto docs = read_corpus(std::string(DIPACO_SOURCE_DIR) + "/inputs/corpus/embedded.jsonl");
  Split a = split_corpus(docs, 0.1, 2);
  std::map<std::string, int> val;
  for (auto& d : a.val) ++val[d.domain];
  std::set<std::string> domains;
  for (auto& d : docs) domains.insert(d.domain);
  EXPECT_GE(domains.size(), 5u);
  for (auto& dom : domains) EXPECT_GE(val[dom], 2) << dom;
  // Adding documents never moves an existing one across the split.
  auto more = docs;
  more.push_back({"zz-new", "new", "text"});
  Split b = split_corpus(more, 0.1, 2);
  std::set<std::string> va, vb;
  for (auto& d : a.val) va.insert(d.id);
  for (auto& d : b.val) vb.insert(d.id);
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
  std::vector<Document> docs = {{"a", "x", std::string(500, 'a')}, {"b", "y", std::string(300, 'b')}};
  std::vector<const Document*> ptrs = {&docs[0], &docs[1]};
  TokenStream s = make_stream(ptrs);
  EXPECT_EQ(s.bytes.size(), 802u);
  std::vector<int32_t> t1(64), g1(64), t2(64), g2(64);
  sample_window(s, 64, 1, 0, 5, 3, t1.data(), g1.data());
  sample_window(s, 64, 1, 0, 5, 3, t2.data(), g2.data());
  EXPECT_EQ(t1, t2);
  for (int i = 0; i < 63; ++i) EXPECT_EQ(g1[i], t1[i + 1]);
  std::vector<size_t> starts;
  EXPECT_EQ(validation_windows(s, 64, 100, starts), 12);
  for (size_t st : starts) EXPECT_LE(st + 65, s.bytes.size());
}

TEST(Shards, HashAndDomainRules) {
  std::vector<Document> docs;
  for (int i = 0; i < 40; ++i) docs.push_back({"d" + std::to_string(i), i % 2 ? "code" : "prose", "t"});
  auto h = shard_by_rule(docs, 4, "hash");
  size_t n = 0;
  for (auto& s : h) {
    n += s.size();
    EXPECT_GT(s.size(), 0u);
  }
  EXPECT_EQ(n, 40u);
  auto d = shard_by_rule(docs, 2, "domain");
  for (auto* x : d[0]) EXPECT_EQ(x->domain, "code");
  for (auto* x : d[1]) EXPECT_EQ(x->domain, "prose");
}
