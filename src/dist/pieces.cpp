#include "dipaco/dist/pieces.hpp"

#include <algorithm>
#include <cstring>
#include <vector>

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

void allgather_pieces(const void* send, void* recv, size_t n, MPI_Datatype type, MPI_Comm comm, size_t max_piece) {
  int size;
  MPI_Comm_size(comm, &size);
  const size_t e = extent(type);
  if (n <= max_piece) {
    MPI_Allgather(send, int(n), type, recv, int(n), type, comm);
    return;
  }
  // Piece k of every rank lands in a scratch buffer, then in its rank's row.
  std::vector<char> piece(max_piece * e * size_t(size));
  for (size_t at = 0; at < n; at += max_piece) {
    const size_t m = std::min(max_piece, n - at);
    MPI_Allgather(static_cast<const char*>(send) + at * e, int(m), type, piece.data(), int(m), type, comm);
    for (int r = 0; r < size; ++r)
      std::memcpy(static_cast<char*>(recv) + (size_t(r) * n + at) * e, piece.data() + size_t(r) * m * e, m * e);
  }
}

}  // namespace dipaco
