#include "dipaco/dist/first_error.hpp"

namespace dipaco {

std::string first_error(const std::string& mine, MPI_Comm comm) {
  int rank, size;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  int first = mine.empty() ? size : rank;
  MPI_Allreduce(MPI_IN_PLACE, &first, 1, MPI_INT, MPI_MIN, comm);
  if (first == size) return "";
  long n = long(mine.size());
  MPI_Bcast(&n, 1, MPI_LONG, first, comm);
  std::string msg = rank == first ? mine : std::string(size_t(n), '\0');
  MPI_Bcast(msg.data(), int(n), MPI_CHAR, first, comm);
  return msg;
}

}  // namespace dipaco
