// Rank 0's progress and report lines. Every rank may call; only rank 0 prints,
// and flushes at once: a job that is killed keeps what it had said, and the
// lines of mpirun's ranks do not wait in a buffer.
#pragma once
#include <string>

namespace dipaco {

// The MPI world rank, set once at start-up. Unset: asked of MPI when it runs, else 0.
void set_log_rank(int rank);

void say(const std::string& line);  // the line and a newline
[[gnu::format(printf, 1, 2)]] void say(const char* format, ...);  // printf's text as is

}  // namespace dipaco
