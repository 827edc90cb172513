// Token inputs: datasets another tool already tokenized, read where they lie
// (the token store indexes them, never copies them).
//   Megatron-LM / NeMo indexed datasets: PREFIX.bin + PREFIX.idx (MMIDIDX
//     version 1, any integer dtype); documents from its document index.
//   llm.c token shards: a 1,024-byte header (magic 20240520: uint16 tokens,
//     20240801: uint32), then the tokens; a document follows each end-of-text
//     token (llm.c writes one before every document).
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "dipaco/data/input_files.hpp"

namespace dipaco {

// An input file's format, from its content: an llm.c magic, or a .bin/.idx pair
// whose .idx starts with Megatron's magic (an .idx stands for its .bin); else
// text. A token input that cannot be read as one (Megatron's legacy TNTIDX, a
// wrong version, a float dtype, an .idx whose sizes disagree with its .bin, an
// llm.c header whose token count disagrees with the file) is a CorpusError
// naming the file.
TokenFormat token_format(const std::string& file);
std::string megatron_bin(const std::string& file);  // PREFIX.bin for PREFIX.bin or PREFIX.idx

// The reading pieces of one token file (source: its index among the run's
// token files): runs of Megatron documents of about piece_bytes of tokens, or a
// whole llm.c shard. eot_token: the deck's end-of-text id, -1 for the format's
// own (llm.c: 50256 in GPT-2 shards, 128000 in Llama 3 shards; Megatron: none).
// `format` is token_format(file)'s answer (not text).
std::vector<InputPiece> plan_token_pieces(const std::string& file, TokenFormat format, int source, uint64_t piece_bytes,
                                          int32_t eot_token);

// A piece's documents in order: text = the tokens as stored, at = their byte
// offset in the file, max_token; id "FILE:N" (the N-th document of the file),
// domain the file's stem. A Megatron document that ends with the end-of-text
// token keeps it as its end, not twice. Empty documents are counted, not
// passed; a negative token id (or one past 2^31) is a CorpusError naming the
// file and byte offset.
void read_token_piece(const InputPiece& piece, const std::function<void(InputDocument&&)>& fn, uint64_t* empty);

// llm.c's decode-only tokenizer file (tokenizer.h: uint32[256] header, magic
// 20240328, version 1 or 2, the vocabulary size; then per id a uint8 length and
// its bytes): the bytes each id stands for, the end-of-document id counted as
// one (as the byte-level end of document). CorpusError naming the file.
std::vector<uint8_t> read_decode_table(const std::string& file, int32_t eod);

}  // namespace dipaco
