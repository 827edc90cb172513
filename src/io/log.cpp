#include "dipaco/io/log.hpp"

#include <mpi.h>

#include <cstdarg>
#include <cstdio>

namespace dipaco {
namespace {

int g_rank = -1;

bool rank_zero() {
  if (g_rank >= 0) return g_rank == 0;
  int up = 0, down = 0, rank = 0;
  MPI_Initialized(&up);
  if (up) MPI_Finalized(&down);
  if (up && !down) MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return rank == 0;
}

}  // namespace

void set_log_rank(int rank) { g_rank = rank; }

void say(const std::string& line) { say("%s\n", line.c_str()); }

void say(const char* format, ...) {
  if (!rank_zero()) return;
  va_list args;
  va_start(args, format);
  std::vfprintf(stdout, format, args);
  va_end(args);
  std::fflush(stdout);
}

}  // namespace dipaco
