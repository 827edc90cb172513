// MPI counts are int: a buffer of more than 2^31 elements (a module, a path
// arena, a feature array at scale) is sent in pieces of at most `max_piece`
// elements, each a collective of its own, instead of a count that wraps.
#pragma once

#include <mpi.h>

#include <cstddef>

namespace dipaco {

constexpr size_t kMaxPiece = size_t(1) << 30;

// In place: buf[0..n) reduced with `op` over comm.
void allreduce_pieces(void* buf, size_t n, MPI_Datatype type, MPI_Op op, MPI_Comm comm, size_t max_piece = kMaxPiece);
// buf[0..n) from `root` to every rank of comm.
void bcast_pieces(void* buf, size_t n, MPI_Datatype type, int root, MPI_Comm comm, size_t max_piece = kMaxPiece);

}  // namespace dipaco
