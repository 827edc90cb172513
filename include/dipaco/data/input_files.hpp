// Input files -> documents: the datasets users already have (JSONL, plain or
// gzip / zstd compressed, one file or many) read as a stream, never whole in
// memory. A file list is expanded once, cut into pieces of reading work that
// do not depend on the rank count, and each piece is read on its own.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "dipaco/data/corpus.hpp"  // CorpusError: every input error

namespace dipaco {

struct InputDocument {
  std::string id, domain, text;  // text: the tokens as stored for a token input (token_inputs.hpp)
  uint64_t at = 0;               // a token input's: the tokens' byte offset in their file
  int64_t max_token = -1;        // a token input's: its largest token id
};

// What an input file holds: JSONL text, or tokens another tool made.
enum class TokenFormat : uint8_t { text, megatron, llmc };

struct InputOptions {
  // JSON key whose string value is the domain (a line without it is an error);
  // "" = the key "domain" when present, else the file's name stem.
  std::string domain_key;
  // When absent from a line, the id is "<file name>:<line number>" (file name
  // without directories); when present it must be a string.
  std::string id_key = "id";
};

// data.corpus / data.val spec: one path, a comma-separated list of paths, shell
// glob patterns (glob(3)), or directories (every regular file below it,
// recursively, whose name ends .jsonl .json .gz .zst .bin .idx); a Megatron
// PREFIX (PREFIX.bin and PREFIX.idx exist) stands for PREFIX.bin. Deterministic: each list
// element expanded and sorted by path (bytes), in the list's order; duplicates
// removed. Throws CorpusError naming the element when one matches nothing or a
// file cannot be opened.
std::vector<std::string> expand_inputs(const std::string& spec);

// A unit of reading work: a whole compressed file, or a byte range [begin, end)
// of a plain file starting at a line start.
struct InputPiece {
  std::string file;
  uint64_t begin = 0, end = 0;
  bool compressed = false;
  int64_t lines_before = -1;  // lines of the file before begin, when known (else counted on demand)
  // A token input (token_inputs.hpp): begin/end count documents (Megatron) or
  // bytes (an llm.c shard, whole); its tokens' dtype code and end-of-text id
  // (-1: none); which of the run's token files it is (the store reads them in place).
  TokenFormat format = TokenFormat::text;
  uint8_t dtype = 1;
  int32_t eod = -1;
  int source = -1;
  uint64_t bytes = 0;  // a token piece's tokens in bytes (its share of the reading work)
};
// '\n' bytes in a plain piece (0 for a compressed one): summed over the pieces
// before it, the line number a piece starts at, without re-reading the file.
uint64_t count_piece_lines(const InputPiece& piece);

// Plain files are cut into pieces of about piece_bytes (0: whole files) at line
// starts (the boundary moved to just after the next '\n'); compressed files
// (detected by magic bytes: gzip 1f 8b, zstd 28 b5 2f fd, not by name) are one
// piece each. The plan depends only on the files and piece_bytes. An empty file,
// one that cannot be opened, a plain file starting with a UTF-8 byte-order mark
// and a bzip2 / xz file are errors naming it.
std::vector<InputPiece> plan_pieces(const std::vector<std::string>& files, uint64_t piece_bytes);

// Reads a piece's JSONL documents in order and calls fn for each one with a
// non-empty text; blank lines are skipped. Line numbers count from the start of
// the file. Memory: a 1 MB buffer, more only for a longer line (at most
// kMaxCorpusLine). Errors name the file and line, or the byte offset in a
// truncated or corrupt compressed stream.
// `empty`, when given, counts the documents skipped for an empty text.
void read_piece(const InputPiece& piece, const InputOptions& o, const std::function<void(InputDocument&&)>& fn,
                uint64_t* empty = nullptr);

// One JSON object per line -> a document; `where` ("file:line") prefixes
// errors, and without an id the id is `where`'s file name (no directories) and
// line_number. The domain falls back to file_stem (see InputOptions).
InputDocument parse_json_document(std::string_view line, const std::string& where, const InputOptions& o,
                                  const std::string& file_stem, long line_number);

}  // namespace dipaco
