#include "dipaco/io/files.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

namespace fs = std::filesystem;

namespace dipaco {

std::string write_failure(const std::string& path, int err) {
  std::string why = err ? std::strerror(err) : "unknown error";
  if (err == ENOSPC || err == EDQUOT) why += " (disk full?)";
  if (err == EFBIG) why += " (a file-size limit, ulimit -f?)";
  return "cannot write " + path + ": " + why;
}

void write_file_atomic(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  errno = 0;
  FILE* f = std::fopen(tmp.c_str(), "w");
  if (!f) throw WriteError(write_failure(tmp, errno));
  int err = 0;
  if (std::fwrite(text.data(), 1, text.size(), f) != text.size() || std::fflush(f) != 0) err = errno ? errno : EIO;
  if (std::fclose(f) != 0 && !err) err = errno ? errno : EIO;
  if (err) {
    std::remove(tmp.c_str());
    throw WriteError(write_failure(path, err));
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) throw WriteError("cannot rename " + tmp + " to " + path + ": " + ec.message());
}

}  // namespace dipaco
