// What prepare learns of each document as it reads (its size, its id's hashes,
// its domain, its split), kept on disk a block at a time: a rank's memory does
// not grow with its slice of the corpus. The rank's part files, made in
// DIR.tmp, are removed or renamed into the store when prepare ends.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "dipaco/data/store_files.hpp"

namespace dipaco {

struct ReadRecord {
  int64_t ptr = 0;      // token inputs: the tokens' offset in the store's address space
  uint64_t id_key = 0;  // hash64(id, 7): the duplicate check
  double id_hash = 0;   // unit_hash(id): the split
  int32_t size = 0;     // tokens (bytes for text)
  uint32_t id_len = 0;
  uint32_t domain = 0;  // the rank's own domain index until remapped to the store's
  uint32_t val = 0;     // 1: a validation document
};
static_assert(sizeof(ReadRecord) == 40);

// Records appended in order, then walked a block at a time.
class RecordFile {
 public:
  static constexpr size_t kBlock = 16384;  // records in memory at once (640 KB)
  explicit RecordFile(std::string path);   // created empty
  ~RecordFile();
  RecordFile(const RecordFile&) = delete;
  RecordFile& operator=(const RecordFile&) = delete;
  void push(const ReadRecord& r);
  void flush();
  uint64_t size() const { return n_; }
  // fn(index of the block's first record, the block) over every block in
  // order; with write_back the block as fn left it is written back.
  void each_block(const std::function<void(uint64_t, std::vector<ReadRecord>&)>& fn, bool write_back = false);
  void remove();  // the file deleted (prepare's end)

 private:
  std::string path_;
  int fd_ = -1;
  uint64_t n_ = 0;
  std::vector<ReadRecord> buf_;
};

// Bytes appended to a file through a 1 MB buffer (a rank's text and ids).
class Appender {
 public:
  explicit Appender(const std::string& path) : out_(path, true) {}  // created empty
  void append(std::string_view s);
  void finish();  // flushed, fsynced and closed
  uint64_t size() const { return at_ + buf_.size(); }

 private:
  OutFile out_;
  uint64_t at_ = 0;
  std::string buf_;
  void write_out();
};

}  // namespace dipaco
