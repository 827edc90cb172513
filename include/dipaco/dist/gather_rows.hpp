// Gathers of rows whose number differs from rank to rank (a block of
// documents' features or paths, a rank's candidates, its domain names): the
// counts are exchanged first, then the rows, in rank order. Counted in rows,
// so that a gather of many values wraps no int count as soon.
#pragma once
#include <mpi.h>

#include <vector>

#include "dipaco/dist/watchdog.hpp"

namespace dipaco {

// Collective over comm: every rank's rows (`width` values of T each, plain
// data, ranks of one kind of machine) concatenated in rank order, on every rank
// (everywhere) or on rank 0 only (empty on the others).
template <class T>
std::vector<T> gather_rows(const std::vector<T>& mine, size_t width, bool everywhere, MPI_Comm comm, const char* what) {
  int rank, size;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  MPI_Datatype row;
  MPI_Type_contiguous(int(width * sizeof(T)), MPI_BYTE, &row);
  MPI_Type_commit(&row);
  int n = int(mine.size() / width);
  std::vector<int> counts(size), displs(size);
  CollectiveScope wait(what);
  MPI_Allgather(&n, 1, MPI_INT, counts.data(), 1, MPI_INT, comm);
  int total = 0;
  for (int r = 0; r < size; ++r) displs[r] = total, total += counts[r];
  std::vector<T> out(everywhere || rank == 0 ? size_t(total) * width : 0);
  if (everywhere) MPI_Allgatherv(mine.data(), n, row, out.data(), counts.data(), displs.data(), row, comm);
  else MPI_Gatherv(mine.data(), n, row, out.data(), counts.data(), displs.data(), row, 0, comm);
  MPI_Type_free(&row);
  return out;
}

}  // namespace dipaco
