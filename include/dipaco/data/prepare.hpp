// The prepare stage's work: the input files (input_files.hpp) streamed once,
// every rank a disjoint run of pieces, into one token store (token_store.hpp).
// The store is the same bytes at any rank count: documents keep the inputs'
// order (files in the order data.corpus lists them, lines in file order), and
// each rank writes its documents at offsets agreed from every rank's counts.
// A prepare killed halfway leaves only DIR.tmp, which the next one removes.
// Token inputs (Megatron, llm.c) are not copied: the store's index points into
// them where they lie (sources.txt), and prepare checks every token id once.
#pragma once
#include <mpi.h>

#include <cstdint>
#include <functional>
#include <string>

namespace dipaco {

struct PrepareOptions {
  std::string corpus;        // data.corpus: files, a list, globs or directories
  std::string val;           // data.val: the same for validation documents ("" = split by id hash)
  std::string domain_key;    // data.domain_key
  double val_fraction = 0.1;
  int min_val_docs = 2;
  uint64_t piece_bytes = uint64_t(64) << 20;  // plain files are read in pieces of about this size
  int32_t eot_token = -1;                      // data.eot_token (-1: the format's own, token_inputs.hpp)
  std::string decode_table;                    // data.decode_table: llm.c's tokenizer file for token inputs
  // data.tokenizer = sentencepiece: the text encoded after it is read (encode.hpp).
  bool sentencepiece = false;
  std::string tokenizer_model, tokenizer_type = "unigram";  // "" = trained on the training text
  int tokenizer_vocab = 4000;
  uint64_t tokenizer_sample_bytes = uint64_t(20) << 20;
  std::function<void()> after_piece;           // tests: a fault point after each piece read
};

// "data.inputs = N files, B bytes, hash H": the inputs' names, sizes and times,
// cheap to compute on every rank (a changed file makes the store stale).
std::string input_identity(const PrepareOptions& o);

struct PrepareReport {
  uint64_t documents = 0, train = 0, val = 0, bytes = 0, input_bytes = 0;
  uint64_t empty = 0;  // lines skipped for an empty text
  uint64_t tokens = 0;  // SentencePiece ids written (0 for bytes)
  double seconds = 0, train_tokenizer_seconds = 0, encode_seconds = 0;
};
// Collective over comm: writes the store into dir with stamp.txt = stamp.
// Bad input: CorpusError on every rank, with the first failing rank's message.
PrepareReport prepare_store(const PrepareOptions& o, const std::string& dir, const std::string& stamp, MPI_Comm comm);

}  // namespace dipaco
