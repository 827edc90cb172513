// Writing the token store's files: raw writes that throw naming the file (a
// full disk must not pass unnoticed), and a rank's part file copied into the
// shared file at its offset. Shared by prepare and the tokenizer's encoding.
#pragma once
#include <mpi.h>

#include <cstdint>
#include <functional>
#include <string>

namespace dipaco {

// All n bytes written at `at`, or a WriteError naming `path` (a full disk must not pass unnoticed).
void pwrite_all(int fd, const std::string& path, const void* data, size_t n, uint64_t at);

struct OutFile {
  std::string path;
  int fd = -1;
  OutFile(const std::string& p, bool create);  // create: O_CREAT | O_TRUNC
  ~OutFile();
  OutFile(const OutFile&) = delete;
  OutFile& operator=(const OutFile&) = delete;
  void pwrite_all(const void* data, size_t n, uint64_t at);
  void resize(uint64_t bytes);
  void finish();  // fsync and close
};

// Bytes [0, bytes) of the file `part` into `out` at `at`: the kernel copies
// (copy_file_range: no pass through this process), read/pwrite where it cannot.
void copy_part(const std::string& part, OutFile& out, uint64_t at, uint64_t bytes);

// Collective: runs body on this rank when `here`, then every rank agrees, so
// that all of them stop together: bad input (CorpusError) on any rank is a
// CorpusError on all, any other failure a WriteError, with the first rank's words.
void agreed(bool here, const std::function<void()>& body, MPI_Comm comm);

}  // namespace dipaco
