// Input files: plain / gzip / zstd JSONL into documents, file lists, pieces,
// and the errors on bad input. Compressed test files are written by Python's
// gzip and zstandard modules, independently of the reader.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "dipaco/data/input_files.hpp"

using namespace dipaco;
namespace fs = std::filesystem;

namespace {

class InputFiles : public ::testing::Test {
 protected:
  std::string dir;
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "dipaco_inputs_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir = tmpl;
  }
  void TearDown() override { fs::remove_all(dir); }
  std::string path(const std::string& name) const { return dir + "/" + name; }
  std::string write(const std::string& name, const std::string& bytes) const {
    fs::create_directories(fs::path(path(name)).parent_path());
    std::ofstream(path(name), std::ios::binary) << bytes;
    return path(name);
  }
  std::string slurp(const std::string& name) const {
    std::ifstream in(path(name), std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  // Runs a Python script in the temporary directory (gzip, zstandard, json imported).
  void python(const std::string& code) const {
    write("script.py", "import gzip, json, os, random, sys, zstandard\nos.chdir(sys.argv[1])\n" + code);
    ASSERT_EQ(std::system(("/usr/bin/python3 " + path("script.py") + " " + dir).c_str()), 0) << code;
  }
};

std::vector<InputDocument> read_all(const std::vector<std::string>& files, uint64_t piece_bytes = 0,
                                    const InputOptions& o = {}) {
  std::vector<InputDocument> docs;
  for (const auto& piece : plan_pieces(files, piece_bytes))
    read_piece(piece, o, [&](InputDocument&& d) { docs.push_back(std::move(d)); });
  return docs;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const CorpusError& e) {
    return e.what();
  }
  return "(no error)";
}

#define EXPECT_HAS(text, part) EXPECT_NE(std::string(text).find(part), std::string::npos) << (text)

std::string documents_py(int n) {  // a Python list `docs` of n varied documents
  return "docs = [{'id': 'd%d' % i, 'domain': 'dom%d' % (i % 3), 'n': i, 'text': 'line \"%d\"\\n' % i * (1 + i % 7)}"
         " for i in range(" + std::to_string(n) + ")]\n"
         "lines = [json.dumps(d) + '\\n' for d in docs]\n";
}

void expect_same(const std::vector<InputDocument>& a, const std::vector<InputDocument>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].id, b[i].id);
    EXPECT_EQ(a[i].domain, b[i].domain);
    EXPECT_EQ(a[i].text, b[i].text);
  }
}

}  // namespace

TEST_F(InputFiles, ReadsGzipMembers) {
  python(documents_py(40) +
         "open('p.jsonl', 'w').write(''.join(lines))\n"
         "open('g.jsonl.gz', 'wb').write(gzip.compress(''.join(lines[:15]).encode()) + gzip.compress(''.join(lines[15:]).encode()))\n");
  auto plain = read_all({path("p.jsonl")});
  ASSERT_EQ(plain.size(), 40u);
  EXPECT_EQ(plain[39].id, "d39");
  EXPECT_EQ(plain[39].domain, "dom0");
  std::string text;
  for (int k = 0; k < 1 + 39 % 7; ++k) text += "line \"39\"\n";
  EXPECT_EQ(plain[39].text, text);
  expect_same(read_all({path("g.jsonl.gz")}), plain);
}

TEST_F(InputFiles, PlainGzipAndZstdGiveTheSameDocuments) {
  python(documents_py(300) +
         "data = ''.join(lines).encode()\n"
         "open('p.jsonl', 'wb').write(data)\n"
         "open('g.gz', 'wb').write(gzip.compress(data[:5000]) + gzip.compress(data[5000:]))\n"  // a member ends mid-line
         "open('z.zst', 'wb').write(zstandard.ZstdCompressor(level=3).compress(data[:7000]) +"
         " zstandard.ZstdCompressor(level=19).compress(data[7000:]))\n"
         // A 256 MB window declared (streamed, size unknown): above zstd's default decoding limit.
         "c = zstandard.ZstdCompressor(compression_params=zstandard.ZstdCompressionParameters.from_level(3, window_log=28))\n"
         "w = c.stream_writer(open('long.zst', 'wb')); w.write(data); w.flush(zstandard.FLUSH_FRAME); w.close()\n");
  auto plain = read_all({path("p.jsonl")});
  ASSERT_EQ(plain.size(), 300u);
  for (std::string f : {"g.gz", "z.zst", "long.zst"}) {
    SCOPED_TRACE(f);
    auto docs = read_all({path(f)});
    expect_same(docs, plain);
  }
  for (auto& p : plan_pieces({path("g.gz"), path("z.zst"), path("p.jsonl")}, 1000))
    EXPECT_EQ(p.compressed, p.file != path("p.jsonl"));
}

TEST_F(InputFiles, LinesAcrossBufferRefills) {
  // ~18 MB: lines cross the 1 MB buffer's refills (plain, gzip, zstd), and a
  // 3 MB line makes the buffer grow.
  python("random.seed(3)\n"
         "texts = ['%d \\\\ \"x\"\\n' % i + 'y' * random.choice([0, 5, 3000, 70000, 300000]) for i in range(200)]\n"
         "texts[100] = 'z' * (3 << 20)\n"
         "data = ''.join(json.dumps({'text': t}) + '\\n' for t in texts).encode()\n"
         "open('big.jsonl', 'wb').write(data)\n"
         "open('big.jsonl.gz', 'wb').write(gzip.compress(data, 1))\n"
         "open('big.jsonl.zst', 'wb').write(zstandard.ZstdCompressor().compress(data))\n"
         "open('expected.bin', 'wb').write(b''.join(t.encode() + b'\\0' for t in texts))\n");
  const std::string expected = slurp("expected.bin");
  for (std::string f : {"big.jsonl", "big.jsonl.gz", "big.jsonl.zst"}) {
    std::string got;
    for (auto& d : read_all({path(f)})) got += d.text + '\0';
    EXPECT_TRUE(got == expected) << f;
  }
  std::string got;
  for (auto& d : read_all({path("big.jsonl")}, 2 << 20)) got += d.text + '\0';
  EXPECT_TRUE(got == expected);
}

TEST_F(InputFiles, CompressionIsDetectedByContentNotName) {
  python("open('gzipped.jsonl', 'wb').write(gzip.compress(b'{\"text\": \"a\"}\\n'))\n"
         "open('plain.gz', 'w').write('{\"text\": \"b\"}\\n')\n");
  auto docs = read_all({path("gzipped.jsonl"), path("plain.gz")});
  ASSERT_EQ(docs.size(), 2u);
  EXPECT_EQ(docs[0].text, "a");
  EXPECT_EQ(docs[1].text, "b");
  EXPECT_EQ(docs[1].domain, "plain");
}

TEST_F(InputFiles, C4LinesGetFileLineIdsAndTheStemAsDomain) {
  python("rows = [{'text': 'Beginners BBQ Class %d' % i, 'timestamp': '2019-04-25T12:57:54Z',"
         " 'url': 'https://example.com/%d?a=1&b=\\\\x' % i} for i in range(5)]\n"
         "os.makedirs('c4/en')\n"
         "open('c4/en/c4-train.00000-of-01024.json.gz', 'wb').write(gzip.compress("
         "('\\n'.join(json.dumps(r) for r in rows[:2]) + '\\n\\n' + '\\n'.join(json.dumps(r) for r in rows[2:]) + '\\n').encode()))\n");
  auto docs = read_all({path("c4/en/c4-train.00000-of-01024.json.gz")});
  ASSERT_EQ(docs.size(), 5u);
  EXPECT_EQ(docs[0].id, "c4-train.00000-of-01024.json.gz:1");
  EXPECT_EQ(docs[2].id, "c4-train.00000-of-01024.json.gz:4");  // line 3 is blank
  EXPECT_EQ(docs[4].text, "Beginners BBQ Class 4");
  for (auto& d : docs) EXPECT_EQ(d.domain, "c4-train.00000-of-01024");
}

TEST_F(InputFiles, DomainKeyAndIdKey) {
  write("books.jsonl", R"({"text": "t1", "source": "arxiv", "domain": "x", "doc_id": "a"}
{"text": "t2", "domain": "wiki", "id": "b"}
)");
  auto docs = read_all({path("books.jsonl")});
  EXPECT_EQ(docs[0].domain, "x");
  EXPECT_EQ(docs[0].id, "books.jsonl:1");
  EXPECT_EQ(docs[1].domain, "wiki");
  EXPECT_EQ(docs[1].id, "b");
  InputOptions o;
  o.domain_key = "source", o.id_key = "doc_id";
  std::string err = error_of([&] { read_all({path("books.jsonl")}, 0, o); });
  EXPECT_HAS(err, path("books.jsonl") + ":2: missing field 'source'");
  write("books.jsonl", R"({"text": "t1", "source": "arxiv", "domain": "x", "doc_id": "a"})");
  docs = read_all({path("books.jsonl")}, 0, o);
  ASSERT_EQ(docs.size(), 1u);
  EXPECT_EQ(docs[0].domain, "arxiv");
  EXPECT_EQ(docs[0].id, "a");
}

TEST_F(InputFiles, SkipsNestedAndUnknownValues) {
  InputDocument d = parse_json_document(
      R"( { "meta": {"tags": ["x,y", {"z": [1, 2.5e-3, -7]}], "q": "}\"]"}, "ok": true, "no": false, "nil": null,)"
      R"( "empty": {}, "arr": [], "text": "body", "n": -1.5E+3 } )",
      "dir/f.jsonl:9", {}, "f", 9);
  EXPECT_EQ(d.text, "body");
  EXPECT_EQ(d.id, "f.jsonl:9");
  EXPECT_EQ(d.domain, "f");
  auto err = [](const std::string& line) {
    return error_of([&] { parse_json_document(line, "f.jsonl:3", {}, "f", 3); });
  };
  EXPECT_HAS(err(R"({"text": "t", "x": tru})"), "f.jsonl:3: expected a value at column 20");
  EXPECT_HAS(err(R"({"text": "t", "x": [1, 2})"), "expected ']'");
  EXPECT_HAS(err(R"({"text": "t", "x": {"a" 1}})"), "expected ':'");
  std::string deep = R"({"text": "t", "x": )" + std::string(100, '[') + std::string(100, ']') + "}";
  EXPECT_HAS(err(deep), "nesting deeper than 64 levels");
}

TEST_F(InputFiles, DecodesEscapesAndSurrogatePairs) {
  InputDocument d = parse_json_document(
      R"({"id": "a\/1", "text": "l1\nl2 \"q\" \\ \t\b\f\r \u00e9\u4e2d\ud83d\ude00 lone \ud800 x \udc00"})", "f:1", {}, "f", 1);
  EXPECT_EQ(d.id, "a/1");
  EXPECT_EQ(d.text, "l1\nl2 \"q\" \\ \t\b\f\r \xc3\xa9\xe4\xb8\xad\xf0\x9f\x98\x80 lone \xef\xbf\xbd x \xef\xbf\xbd");
  EXPECT_HAS(error_of([] { parse_json_document(R"({"text": "a\qb"})", "f:1", {}, "f", 1); }), "bad escape \\q at column 12");
  EXPECT_HAS(error_of([] { parse_json_document(R"({"text": "a\u12G4"})", "f:1", {}, "f", 1); }), "bad \\u escape");
  // Random strings against Python's own encoder, escaped (ensure_ascii) and raw UTF-8, with runs
  // of every length around the scanner's 16- and 32-byte steps.
  python("random.seed(7)\n"
         "alphabet = ['a', ' ', '\"', '\\\\', '\\n', '\\t', '/', '\\x01', '\\u00e9', '\\u4e2d', '\\U0001F600', 'xxxxxxxxxxxxxxx']\n"
         "texts = [''.join(random.choice(alphabet) for _ in range(random.randrange(1, 90))) for _ in range(400)]\n"
         "with open('r.jsonl', 'w', encoding='utf-8') as f:\n"
         "  for i, t in enumerate(texts): f.write(json.dumps({'text': t, 'id': str(i)}, ensure_ascii=i % 2 == 0) + '\\n')\n"
         "open('expected.bin', 'wb').write(b''.join(t.encode() + b'\\0' for t in texts))\n");
  std::string got;
  for (auto& doc : read_all({path("r.jsonl")})) got += doc.text + '\0';
  EXPECT_EQ(got, slurp("expected.bin"));
}

TEST_F(InputFiles, ExpandsListsGlobsAndDirectories) {
  for (std::string f : {"a/2.jsonl", "a/1.json.gz", "a/sub/0.zst", "a/notes.txt", "b/x.jsonl", "b/y.jsonl", "c.jsonl"})
    write(f, "{\"text\": \"t\"}\n");
  auto got = expand_inputs(path("c.jsonl") + ", " + path("a") + "," + path("b/*.jsonl") + "," + path("c.jsonl") + "," +
                           dir + "/./b/x.jsonl");
  std::vector<std::string> want = {path("c.jsonl"),   path("a/1.json.gz"), path("a/2.jsonl"),
                                   path("a/sub/0.zst"), path("b/x.jsonl"), path("b/y.jsonl")};
  EXPECT_EQ(got, want);
  EXPECT_EQ(expand_inputs(path("*")), (std::vector<std::string>{path("a/1.json.gz"), path("a/2.jsonl"), path("a/sub/0.zst"),
                                                               path("b/x.jsonl"), path("b/y.jsonl"), path("c.jsonl")}));
  EXPECT_HAS(error_of([&] { expand_inputs(path("c.jsonl") + "," + path("nope/*.jsonl")); }),
             "input pattern '" + path("nope/*.jsonl") + "' matches no files");
  EXPECT_HAS(error_of([&] { expand_inputs(path("missing.jsonl")); }), "cannot open input file '" + path("missing.jsonl") + "'");
  fs::create_directories(path("empty"));
  EXPECT_HAS(error_of([&] { expand_inputs(path("empty")); }), "input directory '" + path("empty") + "' holds no");
  EXPECT_HAS(error_of([] { expand_inputs(" , "); }), "no input files");
}

TEST_F(InputFiles, PiecesConcatenateToTheWholeFile) {
  std::string text;
  for (int i = 1; i <= 200; ++i) {
    if (i % 17 == 0) text += "\n";  // blank lines count as lines
    text += "{\"text\": \"" + std::string(size_t(i * 37 % 300), 'x') + std::to_string(i) + "\"}" + (i < 200 ? "\n" : "");
  }
  const std::string f = write("doc.jsonl", text);  // no '\n' after the last line
  auto whole = read_all({f});
  ASSERT_EQ(whole.size(), 200u);
  EXPECT_EQ(whole[16].id, "doc.jsonl:18");  // after the first blank line
  EXPECT_EQ(whole[199].id, "doc.jsonl:" + std::to_string(200 + 200 / 17));
  for (uint64_t piece_bytes : {1, 100, 1000, 4096}) {
    auto plan = plan_pieces({f}, piece_bytes);
    ASSERT_EQ(plan.front().begin, 0u);
    EXPECT_EQ(plan.back().end, text.size());
    for (size_t i = 0; i < plan.size(); ++i) {
      if (i > 0) {
        EXPECT_EQ(plan[i].begin, plan[i - 1].end);
        EXPECT_EQ(text[plan[i].begin - 1], '\n');
      }
      EXPECT_GE(plan[i].end - plan[i].begin, std::min<uint64_t>(piece_bytes, text.size() - plan[i].begin));
    }
    if (piece_bytes == 1000) {
      EXPECT_GT(plan.size(), 30u);
    }
    expect_same(read_all({f}, piece_bytes), whole);
    auto again = plan_pieces({f}, piece_bytes);
    ASSERT_EQ(again.size(), plan.size());
    for (size_t i = 0; i < plan.size(); ++i) EXPECT_EQ(again[i].end, plan[i].end);
  }
}

TEST_F(InputFiles, TruncatedGzipNamesFileAndOffset) {
  python(documents_py(500) + "data = gzip.compress(''.join(lines).encode())\n"
         "open('t.jsonl.gz', 'wb').write(data[:len(data) // 2])\n"
         "open('header.gz', 'wb').write(data[:5])\n");
  std::vector<InputDocument> docs;
  std::string err = error_of([&] {
    for (auto& p : plan_pieces({path("t.jsonl.gz")}, 0)) read_piece(p, {}, [&](InputDocument&& d) { docs.push_back(d); });
  });
  const size_t half = fs::file_size(path("t.jsonl.gz"));
  EXPECT_HAS(err, path("t.jsonl.gz") + ": truncated gzip stream after ");
  EXPECT_HAS(err, "the file ends at byte " + std::to_string(half));
  EXPECT_GT(docs.size(), 10u);  // the documents before the cut were read
  EXPECT_HAS(error_of([&] { read_all({path("header.gz")}); }), "truncated gzip stream after 0 bytes of output");
}

TEST_F(InputFiles, TruncatedZstdNamesFileAndOffset) {
  python(documents_py(500) + "data = zstandard.ZstdCompressor().compress(''.join(lines).encode())\n"
         "open('t.zst', 'wb').write(data[:len(data) - 3])\n");
  std::string err = error_of([&] { read_all({path("t.zst")}); });
  EXPECT_HAS(err, path("t.zst") + ": truncated zstd stream after ");
  EXPECT_HAS(err, "the file ends at byte " + std::to_string(fs::file_size(path("t.zst"))));
}

TEST_F(InputFiles, CorruptStreamsNameFileAndOffset) {
  python(documents_py(200) + "data = ''.join(lines).encode()\n"
         "g = bytearray(gzip.compress(data)); g[len(g) // 2] ^= 0xFF; g[len(g) // 2 + 1] ^= 0x55\n"
         "open('c.gz', 'wb').write(bytes(g))\n"
         "open('junk.gz', 'wb').write(gzip.compress(data) + b'trailing junk')\n"
         "z = bytearray(zstandard.ZstdCompressor().compress(data)); z[len(z) // 2] ^= 0xFF\n"
         "open('c.zst', 'wb').write(bytes(z))\n");
  EXPECT_HAS(error_of([&] { read_all({path("c.gz")}); }), path("c.gz") + ": corrupt gzip stream after");
  EXPECT_HAS(error_of([&] { read_all({path("junk.gz")}); }), path("junk.gz") + ": corrupt gzip stream");
  std::string err = error_of([&] { read_all({path("c.zst")}); });
  EXPECT_HAS(err, path("c.zst") + ": corrupt zstd stream after");
  EXPECT_HAS(err, "of the file");
}

TEST_F(InputFiles, ByteOrderMarkIsRefused) {
  write("bom.jsonl", "\xEF\xBB\xBF{\"text\": \"t\"}\n");
  EXPECT_HAS(error_of([&] { plan_pieces({path("bom.jsonl")}, 0); }),
             path("bom.jsonl") + ": starts with a UTF-8 byte-order mark (EF BB BF); save it without one");
  python("open('bom.jsonl.gz', 'wb').write(gzip.compress(b'\\xef\\xbb\\xbf{\"text\": \"t\"}\\n'))\n");
  EXPECT_HAS(error_of([&] { read_all({path("bom.jsonl.gz")}); }), path("bom.jsonl.gz") + ": starts with a UTF-8 byte-order mark");
}

TEST_F(InputFiles, BadLinesNameFileLineAndColumn) {
  std::string text;
  for (int i = 1; i <= 60; ++i) text += "{\"id\": \"" + std::to_string(i) + "\", \"text\": \"abc\"}\n";
  write("ok.jsonl", text);
  write("missing.jsonl", text + "{\"id\": \"x\", \"body\": \"abc\"}\n");
  write("bad.jsonl", text + "{\"id\": \"x\", \"text\": \"abc\" \"more\": 1}\n");
  write("number.jsonl", text + "{\"id\": 61, \"text\": \"abc\"}\n");
  write("text.jsonl", text + "{\"text\": [\"abc\"]}\n");
  write("unterminated.jsonl", text + "{\"text\": \"abc}\n");
  write("trailing.jsonl", text + "{\"text\": \"abc\"} x\n");
  for (uint64_t piece_bytes : {0, 200}) {  // the line counts from the start of the file in any piece
    auto err = [&](const std::string& f) { return error_of([&] { read_all({path(f)}, piece_bytes); }); };
    EXPECT_HAS(err("missing.jsonl"), path("missing.jsonl") + ":61: missing field 'text'");
    EXPECT_HAS(err("bad.jsonl"), path("bad.jsonl") + ":61: expected '}' at column 27");
    EXPECT_HAS(err("number.jsonl"), path("number.jsonl") + ":61: field 'id' must be a string at column 8");
    EXPECT_HAS(err("text.jsonl"), path("text.jsonl") + ":61: field 'text' must be a string");
    EXPECT_HAS(err("unterminated.jsonl"), path("unterminated.jsonl") + ":61: unterminated string");
    EXPECT_HAS(err("trailing.jsonl"), path("trailing.jsonl") + ":61: trailing characters after the object at column 17");
  }
  EXPECT_EQ(read_all({path("ok.jsonl")}, 200).size(), 60u);
}

TEST_F(InputFiles, EmptyFileAmongSeveralIsNamed) {
  write("a.jsonl", "{\"text\": \"t\"}\n");
  write("b.jsonl", "");
  write("c.jsonl", "{\"text\": \"t\"}\n");
  auto files = expand_inputs(path("*.jsonl"));
  ASSERT_EQ(files.size(), 3u);
  EXPECT_HAS(error_of([&] { plan_pieces(files, 0); }), "input file '" + path("b.jsonl") + "' is empty");
  EXPECT_HAS(error_of([&] { plan_pieces({path("gone.jsonl")}, 0); }), "cannot open input file '" + path("gone.jsonl") + "'");
  python("import bz2\nopen('x.jsonl.bz2', 'wb').write(bz2.compress(b'{}'))\n");
  EXPECT_HAS(error_of([&] { plan_pieces({path("x.jsonl.bz2")}, 0); }), "bzip2 compressed; only gzip and zstd are read");
}

TEST_F(InputFiles, OverlongLineIsRefused) {
  {
    std::ofstream out(path("long.jsonl"), std::ios::binary);
    out << "{\"text\": \"short\"}\n{\"text\": \"";
    std::string chunk(1 << 20, 'x');
    for (size_t i = 0; i <= (kMaxCorpusLine >> 20); ++i) out << chunk;
    out << "\"}\n";
  }
  EXPECT_HAS(error_of([&] { read_all({path("long.jsonl")}); }), path("long.jsonl") + ":2: line longer than 64 MB");
}
