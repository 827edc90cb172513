// The token store: the same bytes at any rank count, the split of the
// in-memory rule, and a Megatron index that agrees with its tokens.
#include <cstring>
#include <fstream>
#include <sstream>

#include "dipaco/data/prepare.hpp"
#include "dipaco/data/token_store.hpp"
#include "harness.hpp"

using namespace dipaco;
using namespace testing_mpi;

namespace {

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

PrepareOptions embedded(uint64_t piece_bytes) {
  PrepareOptions o;
  o.corpus = std::string(DIPACO_SOURCE_DIR) + "/inputs/corpus/embedded.jsonl";
  o.piece_bytes = piece_bytes;  // small pieces: every rank reads some
  return o;
}

const char* kFiles[] = {"corpus.bin", "corpus.idx", "docs.bin", "ids.bin", "domains.txt", "meta.txt"};

}  // namespace

TEST(TokenStore, SameBytesAtAnyRankCount) {
  const std::string dir = shared_tmpdir("store");
  // Rank 0 alone, then every rank of the world.
  if (world_rank() == 0) prepare_store(embedded(40000), dir + "/one", "stamp\n", MPI_COMM_SELF);
  prepare_store(embedded(40000), dir + "/all", "stamp\n", MPI_COMM_WORLD);
  if (world_rank() == 0)
    for (const char* f : kFiles) EXPECT_EQ(slurp(dir + "/one/" + f), slurp(dir + "/all/" + f)) << f;
  MPI_Barrier(MPI_COMM_WORLD);
}

TEST(TokenStore, SplitAndDocumentsMatchTheInMemoryReader) {
  const std::string dir = shared_tmpdir("store_split");
  prepare_store(embedded(30000), dir + "/s", "stamp\n", MPI_COMM_WORLD);
  const TokenStore store(dir + "/s");
  const auto& docs = corpus_documents();
  ASSERT_EQ(store.documents(), docs.size());
  for (size_t i = 0; i < docs.size(); ++i) {
    const Document d = store.document(i);
    ASSERT_EQ(read_view(d.id), docs[i].id);
    ASSERT_EQ(d.domain, docs[i].domain);
    ASSERT_EQ(store.text(i), docs[i].text);
  }
  const Split a = store.split();
  const Split b = split_corpus(corpus_views(), 0.1, 2);  // input order, as the store keeps it
  ASSERT_EQ(a.train.size(), b.train.size());
  ASSERT_EQ(a.val.size(), b.val.size());
  for (size_t i = 0; i < a.val.size(); ++i) EXPECT_EQ(read_view(a.val[i].id), b.val[i].id);
  EXPECT_EQ(a.unvalidated, b.unvalidated);
  MPI_Barrier(MPI_COMM_WORLD);
}

// A stale or half-written store directory is replaced, never trusted.
TEST(TokenStore, UnfinishedPrepareIsRemoved) {
  const std::string dir = shared_tmpdir("store_tmp");
  if (world_rank() == 0) {
    std::filesystem::create_directories(dir + "/s.tmp");
    std::ofstream(dir + "/s.tmp/corpus.bin") << "half";
  }
  MPI_Barrier(MPI_COMM_WORLD);
  prepare_store(embedded(1 << 20), dir + "/s", "stamp\n", MPI_COMM_WORLD);
  EXPECT_FALSE(std::filesystem::exists(dir + "/s.tmp"));
  EXPECT_EQ(TokenStore(dir + "/s").documents(), corpus_documents().size());
  MPI_Barrier(MPI_COMM_WORLD);
  // A store missing its meta (a prepare killed before its last write) is refused by name.
  if (world_rank() == 0) {
    std::filesystem::remove(dir + "/s/meta.txt");
    try {
      TokenStore t(dir + "/s");
      ADD_FAILURE() << "opened a store without meta.txt";
    } catch (const CorpusError& e) {
      EXPECT_NE(std::string(e.what()).find("meta.txt"), std::string::npos) << e.what();
    }
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

TEST(TokenStore, DuplicateIdsAreCountedAndNamed) {
  const std::string dir = shared_tmpdir("store_dup");
  if (world_rank() == 0) {
    std::ofstream f(dir + "/dup.jsonl");
    for (int i = 0; i < 40; ++i)
      f << "{\"id\":\"doc" << (i % 30) << "\",\"domain\":\"d\",\"text\":\"text number " << i << "\"}\n";
  }
  MPI_Barrier(MPI_COMM_WORLD);
  PrepareOptions o;
  o.corpus = dir + "/dup.jsonl";
  o.piece_bytes = 300;
  try {
    prepare_store(o, dir + "/s", "stamp\n", MPI_COMM_WORLD);
    ADD_FAILURE() << "duplicate ids accepted";
  } catch (const CorpusError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("10 duplicate document id(s)"), std::string::npos) << m;
    EXPECT_NE(m.find("'doc0'"), std::string::npos) << m;
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

// Documents and token counts read in bulk (the index a block at a time) are
// each document's, in any order, across blocks.
TEST(TokenStore, BulkReadsAreEachDocuments) {
  const std::string dir = shared_tmpdir("store_bulk");
  const int n = 3 * int(TokenStore::kSizesBlock) + 17;
  if (world_rank() == 0) {
    std::ofstream f(dir + "/many.jsonl");
    for (int i = 0; i < n; ++i) f << "{\"id\":\"d" << i << "\",\"text\":\"" << std::string(size_t(1 + i % 13), 'x') << "\"}\n";
  }
  MPI_Barrier(MPI_COMM_WORLD);
  PrepareOptions o;
  o.corpus = dir + "/many.jsonl";
  prepare_store(o, dir + "/s", "stamp\n", MPI_COMM_WORLD);
  const TokenStore store(dir + "/s");
  ASSERT_EQ(store.documents(), size_t(n));
  std::vector<uint32_t> order(store.documents());
  for (size_t i = 0; i < order.size(); ++i) order[i] = uint32_t((i * 7919) % order.size());
  for (const auto& index : {order, store.split().train.index()}) {
    const DocList list(store, index);
    const std::vector<uint64_t> bulk = list.tokens();
    const std::vector<Document> docs = list.documents(0, list.size());
    for (size_t i = 0; i < index.size(); ++i) {
      const Document one = store.document(index[i]);
      ASSERT_EQ(bulk[i], one.tokens()) << i;
      ASSERT_EQ(docs[i].text.data(), one.text.data()) << i;  // the same views, made in bulk
      ASSERT_EQ(docs[i].text.size(), one.text.size()) << i;
      ASSERT_EQ(docs[i].id.data(), one.id.data()) << i;
      ASSERT_EQ(docs[i].id.size(), one.id.size()) << i;
      ASSERT_EQ(docs[i].domain, one.domain) << i;
    }
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

// Lines without ids are "file:line" by their line in the file, whichever rank
// reads the piece they are in (a plain file cut into many pieces).
TEST(TokenStore, FileLineIdsAcrossPieces) {
  const std::string dir = shared_tmpdir("store_lines");
  if (world_rank() == 0) {
    std::ofstream f(dir + "/c4.jsonl");
    for (int i = 1; i <= 120; ++i) f << (i % 7 ? "{\"text\":\"line " + std::to_string(i) + "\",\"url\":\"u\"}\n" : "\n");
  }
  MPI_Barrier(MPI_COMM_WORLD);
  PrepareOptions o;
  o.corpus = dir + "/c4.jsonl";
  o.piece_bytes = 100;
  if (world_rank() == 0) prepare_store(o, dir + "/one", "stamp\n", MPI_COMM_SELF);
  prepare_store(o, dir + "/all", "stamp\n", MPI_COMM_WORLD);
  if (world_rank() == 0) {
    EXPECT_EQ(slurp(dir + "/one/ids.bin"), slurp(dir + "/all/ids.bin"));
    const TokenStore s(dir + "/all");
    for (size_t i = 0; i < s.documents(); ++i) {
      const Document d = s.document(i);
      const std::string line = s.text(i).substr(5);  // "line N" is on line N
      EXPECT_EQ(read_view(d.id), "c4.jsonl:" + line);
    }
  }
  MPI_Barrier(MPI_COMM_WORLD);
}
