#include "dipaco/data/read_records.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "dipaco/io/files.hpp"

namespace dipaco {

namespace {

void write_all(int fd, const std::string& path, const void* data, size_t n, uint64_t at) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::pwrite(fd, p, n, off_t(at));
    if (w <= 0) throw WriteError(write_failure(path, w < 0 ? errno : ENOSPC));
    p += w, n -= size_t(w), at += uint64_t(w);
  }
}

int create(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
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
  write_all(fd_, path_, buf_.data(), buf_.size() * sizeof(ReadRecord), n_ * sizeof(ReadRecord));
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
    if (write_back) write_all(fd_, path_, block.data(), bytes, first * sizeof(ReadRecord));
  }
}

void RecordFile::remove() {
  if (fd_ >= 0) ::close(fd_), fd_ = -1;
  ::unlink(path_.c_str());
}

Appender::Appender(const std::string& path) : path_(path), fd_(create(path)) {}

Appender::~Appender() {
  if (fd_ >= 0) ::close(fd_);
}

void Appender::write_out() {
  write_all(fd_, path_, buf_.data(), buf_.size(), at_);
  at_ += buf_.size();
  buf_.clear();
}

void Appender::append(std::string_view s) {
  buf_ += s;
  if (buf_.size() >= (size_t(1) << 20)) write_out();
}

void Appender::finish() {
  write_out();
  const int fd = fd_;
  fd_ = -1;
  if (::fsync(fd) != 0 || ::close(fd) != 0) throw WriteError(write_failure(path_, errno));
}

}  // namespace dipaco
