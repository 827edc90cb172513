#include "dipaco/data/read_records.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "dipaco/io/files.hpp"

namespace dipaco {

namespace {

int create(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);  // read back, unlike OutFile
  if (fd < 0) throw WriteError(write_failure(path, errno));
  return fd;
}

}  // namespace

RecordFile::RecordFile(std::string path) : path_(std::move(path)), fd_(create(path_)) { buf_.reserve(kBlock); }

RecordFile::~RecordFile() {
  if (fd_ >= 0) ::close(fd_);
}

void RecordFile::push(const ReadRecord& r) {
  buf_.push_back(r);
  if (buf_.size() == kBlock) flush();
}

void RecordFile::flush() {
  pwrite_all(fd_, path_, buf_.data(), buf_.size() * sizeof(ReadRecord), n_ * sizeof(ReadRecord));
  n_ += buf_.size();
  buf_.clear();
}

void RecordFile::each_block(const std::function<void(uint64_t, std::vector<ReadRecord>&)>& fn, bool write_back) {
  flush();
  std::vector<ReadRecord> block;
  for (uint64_t first = 0; first < n_; first += kBlock) {
    block.resize(size_t(std::min<uint64_t>(kBlock, n_ - first)));
    const size_t bytes = block.size() * sizeof(ReadRecord);
    size_t got = 0;
    while (got < bytes) {
      const ssize_t r = ::pread(fd_, reinterpret_cast<char*>(block.data()) + got, bytes - got,
                                off_t(first * sizeof(ReadRecord) + got));
      if (r <= 0) throw WriteError("cannot read back " + path_ + ": " + (r < 0 ? std::strerror(errno) : "short file"));
      got += size_t(r);
    }
    fn(first, block);
    if (write_back) pwrite_all(fd_, path_, block.data(), bytes, first * sizeof(ReadRecord));
  }
}

void RecordFile::remove() {
  if (fd_ >= 0) ::close(fd_), fd_ = -1;
  ::unlink(path_.c_str());
}

void Appender::write_out() {
  out_.pwrite_all(buf_.data(), buf_.size(), at_);
  at_ += buf_.size();
  buf_.clear();
}

void Appender::append(std::string_view s) {
  buf_ += s;
  if (buf_.size() >= (size_t(1) << 20)) write_out();
}

void Appender::finish() {
  write_out();
  out_.finish();
}

}  // namespace dipaco
