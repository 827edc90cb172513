#include "dipaco/data/store_files.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "dipaco/data/corpus.hpp"  // CorpusError
#include "dipaco/dist/first_error.hpp"
#include "dipaco/io/files.hpp"

namespace dipaco {

OutFile::OutFile(const std::string& p, bool create) : path(p) {
  fd = ::open(p.c_str(), O_WRONLY | O_CLOEXEC | (create ? O_CREAT | O_TRUNC : 0), 0644);
  if (fd < 0) throw WriteError(write_failure(p, errno));
}

OutFile::~OutFile() {
  if (fd >= 0) ::close(fd);
}

void pwrite_all(int fd, const std::string& path, const void* data, size_t n, uint64_t at) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::pwrite(fd, p, std::min<size_t>(n, size_t(1) << 30), off_t(at));
    if (w <= 0) throw WriteError(write_failure(path, w < 0 ? errno : ENOSPC));
    p += w, n -= size_t(w), at += uint64_t(w);
  }
}

void OutFile::pwrite_all(const void* data, size_t n, uint64_t at) { dipaco::pwrite_all(fd, path, data, n, at); }

void OutFile::resize(uint64_t bytes) {
  if (::ftruncate(fd, off_t(bytes)) != 0) throw WriteError(write_failure(path, errno));
}

void OutFile::finish() {
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    fd = -1;
    throw WriteError(write_failure(path, errno));
  }
  fd = -1;
}

void copy_part(const std::string& part, OutFile& out, uint64_t at, uint64_t bytes) {
  const int fd = ::open(part.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw WriteError("cannot read back " + part + ": " + std::strerror(errno));
  loff_t in_at = 0, out_at = loff_t(at);
  while (in_at < loff_t(bytes)) {
    const ssize_t r = ::copy_file_range(fd, &in_at, out.fd, &out_at, size_t(loff_t(bytes) - in_at), 0);
    if (r > 0) continue;
    if (r < 0 && errno != EXDEV && errno != ENOSYS && errno != EOPNOTSUPP && errno != EINVAL) {
      const int err = errno;
      ::close(fd);
      throw WriteError(write_failure(out.path, err));
    }
    std::vector<char> chunk(size_t(1) << 20);
    try {
      for (ssize_t k; (k = ::pread(fd, chunk.data(), chunk.size(), in_at)) > 0; in_at += k, out_at += k)
        out.pwrite_all(chunk.data(), size_t(k), uint64_t(out_at));
    } catch (...) {
      ::close(fd);
      throw;
    }
    break;
  }
  ::close(fd);
}

void agreed(bool here, const std::function<void()>& body, MPI_Comm comm) {
  std::string error, failure;
  if (here) try {
      body();
    } catch (const CorpusError& e) {
      error = e.what();
    } catch (const std::exception& e) {
      failure = e.what();
    }
  if (auto e = first_error(failure, comm); !e.empty()) throw WriteError(e);
  if (auto e = first_error(error, comm); !e.empty()) throw CorpusError(e);
}

}  // namespace dipaco
