#include "dipaco/data/tokenizer.hpp"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <fstream>
#include <sstream>

#include "dipaco/data/corpus.hpp"  // CorpusError
#include "dipaco/data/token_store.hpp"
#include "dipaco/io/files.hpp"

namespace dipaco {

Tokenizer::Tokenizer(const std::string& model_file) : file_(model_file) {
  std::ifstream in(model_file, std::ios::binary);
  if (!in) throw CorpusError("cannot open the tokenizer model '" + model_file + "'");
  std::ostringstream ss;
  ss << in.rdbuf();
  serialized_ = ss.str();
  load("'" + model_file + "'");
}

Tokenizer::Tokenizer(const std::string& serialized, const std::string& what) : file_(what), serialized_(serialized) {
  load(what);
}

void Tokenizer::load(const std::string& what) {
  sp_ = std::make_unique<sentencepiece::SentencePieceProcessor>();
  const auto status = sp_->LoadFromSerializedProto(serialized_);
  if (!status.ok()) throw CorpusError(what + " is not a SentencePiece model: " + std::string(status.message()));
  if (sp_->eos_id() < 0) throw CorpusError("the tokenizer model " + what + " has no </s> (eos_id = -1): it ends documents");
  bytes_.resize(size_t(sp_->GetPieceSize()));
  static const std::string kSpace = "\xe2\x96\x81";  // U+2581, SentencePiece's word-boundary marker
  for (int id = 0; id < sp_->GetPieceSize(); ++id) {
    if (id == sp_->eos_id()) bytes_[id] = 1;
    else if (sp_->IsByte(id)) bytes_[id] = 1;
    else if (sp_->IsControl(id) || sp_->IsUnknown(id) || sp_->IsUnused(id)) bytes_[id] = 0;
    else {
      const std::string& p = sp_->IdToPiece(id);
      size_t n = 0;
      for (size_t at = 0; at < p.size();) {
        if (p.compare(at, kSpace.size(), kSpace) == 0) at += kSpace.size();
        else ++at;
        ++n;  // the marker decodes to one space; any other byte is itself
      }
      bytes_[id] = uint8_t(std::min<size_t>(n, 255));
    }
  }
}

Tokenizer::~Tokenizer() = default;

int Tokenizer::vocab_size() const { return sp_->GetPieceSize(); }
int Tokenizer::eod() const { return sp_->eos_id(); }

std::vector<int> Tokenizer::encode(std::string_view text) const {
  std::vector<int> ids;
  const auto status = sp_->Encode(absl::string_view(text.data(), text.size()), &ids);
  if (!status.ok()) throw CorpusError("SentencePiece could not encode a text: " + std::string(status.message()));
  return ids;
}

std::string Tokenizer::decode(const std::vector<int>& ids) const {
  std::string out;
  const auto status = sp_->Decode(ids, &out);
  if (!status.ok()) throw CorpusError("SentencePiece could not decode ids: " + std::string(status.message()));
  return out;
}

std::vector<uint8_t> store_token_bytes(const TokenStore& store) {
  if (const std::string file = store.tokenizer_file(); !file.empty()) return Tokenizer(file).token_bytes();
  if (store.meta("token_bytes").empty()) return {};
  const std::string file = store.dir() + "/" + store.meta("token_bytes");
  std::ifstream in(file, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  const std::string b = ss.str();
  if (!in || b.size() < size_t(store.vocab_size())) throw CorpusError(file + ": missing or shorter than the vocabulary");
  return std::vector<uint8_t>(b.begin(), b.end());
}

namespace {
class Sentences : public sentencepiece::SentenceIterator {
 public:
  explicit Sentences(const std::function<bool(std::string&)>& next) : next_(next) { Next(); }
  bool done() const override { return done_; }
  void Next() override { done_ = !next_(value_); }
  const std::string& value() const override { return value_; }
  sentencepiece::util::Status status() const override { return {}; }

 private:
  std::function<bool(std::string&)> next_;
  std::string value_;
  bool done_ = false;
};
}  // namespace

void train_tokenizer(const std::function<bool(std::string&)>& next, int vocab, const std::string& type,
                     const std::string& model_file) {
  Sentences it(next);
  // Byte fallback: any text encodes (no <unk>); full character coverage for code and other scripts;
  // no normalisation, no dummy prefix, whitespace kept: a document's tokens stand for exactly its bytes.
  // No model_prefix: the model comes back as bytes, and holds no path of this run (the same model at any rank count).
  const std::string args = "--vocab_size=" + std::to_string(vocab) + " --model_type=" + type +
                           " --byte_fallback=true --character_coverage=1.0 --add_dummy_prefix=false"
                           " --normalization_rule_name=identity --remove_extra_whitespaces=false --split_digits=true"
                           " --max_sentence_length=16384 --minloglevel=2 --num_threads=1";
  std::string model;
  const auto status = sentencepiece::SentencePieceTrainer::Train(args, &it, &model);
  if (!status.ok()) throw CorpusError("SentencePiece could not train a tokenizer: " + std::string(status.message()));
  write_file_atomic(model_file, model);
}

}  // namespace dipaco
