// Checked writes of the run directory's small files (metrics, stamps,
// deck.ini, eval.json, summary.json, checkpoints/latest): a failed write (a
// full disk, a file-size limit) throws WriteError naming the file, so a run
// never goes on after its output was silently lost.
#pragma once
#include <stdexcept>
#include <string>

namespace dipaco {

// On the writing rank only (usually rank 0): not agreed on by the others.
struct WriteError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// "cannot write FILE: No space left on device (disk full?)" from errno.
std::string write_failure(const std::string& path, int err);
// Writes path.tmp, checks every step, renames it to path. Throws WriteError.
void write_file_atomic(const std::string& path, const std::string& text);

}  // namespace dipaco
