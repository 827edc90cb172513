#include "dipaco/dist/pieces.hpp"

#include <algorithm>

namespace dipaco {

namespace {
size_t extent(MPI_Datatype type) {
  MPI_Aint lb, ext;
  MPI_Type_get_extent(type, &lb, &ext);
  return size_t(ext);
}
}  // namespace

void allreduce_pieces(void* buf, size_t n, MPI_Datatype type, MPI_Op op, MPI_Comm comm, size_t max_piece) {
  char* p = static_cast<char*>(buf);
  const size_t e = extent(type);
  size_t at = 0;
  do {  // an empty buffer still meets the other ranks once
    MPI_Allreduce(MPI_IN_PLACE, p + at * e, int(std::min(max_piece, n - at)), type, op, comm);
    at += max_piece;
  } while (at < n);
}

void bcast_pieces(void* buf, size_t n, MPI_Datatype type, int root, MPI_Comm comm, size_t max_piece) {
  char* p = static_cast<char*>(buf);
  const size_t e = extent(type);
  size_t at = 0;
  do {
    MPI_Bcast(p + at * e, int(std::min(max_piece, n - at)), type, root, comm);
    at += max_piece;
  } while (at < n);
}

}  // namespace dipaco
