// The tokenizer's pass of prepare (data.tokenizer = sentencepiece): the byte
// store prepare has just written is encoded into token ids, every rank a
// contiguous run of its documents, the same bytes at any rank count. The
// documents, ids, domains and split stay those of the byte store.
#pragma once
#include <mpi.h>

#include <string>

#include "dipaco/data/prepare.hpp"

namespace dipaco {

struct EncodeReport {
  std::string meta;  // meta.txt's token lines (tokens, vocab_size, eod, tokenizer_hash, ...)
  uint64_t tokenizer_hash = 0;
  uint64_t tokens = 0;
  double train_seconds = 0, encode_seconds = 0;  // the tokenizer's training (0 when given), the encoding pass
};

// Collective over comm. dir holds a complete byte store (not yet renamed into
// place); its corpus.bin/.idx are replaced by the token ids, and
// dir/tokenizer.model is the model used: o.tokenizer_model copied, or one
// trained on about o.tokenizer_sample_bytes of the training documents chosen
// by a hash of the id. CorpusError (every rank) when the model is missing or
// corrupt or cannot be trained; WriteError when a write fails.
EncodeReport encode_store(const PrepareOptions& o, const std::string& dir, MPI_Comm comm);

}  // namespace dipaco
