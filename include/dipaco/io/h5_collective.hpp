// Collective writes into a parallel-HDF5 file: every rank creates every
// object with the same values, one rank writes each dataset's data, and a
// failed write on any rank is agreed by all of them at once (AbandonFile),
// so that no rank is left waiting in a collective the others have left.
#pragma once
#include <mpi.h>
#include <hdf5.h>

#include <string>
#include <vector>

#include "dipaco/io/h5io.hpp"

namespace dipaco {

// A data write failed on some rank: the file can no longer be flushed or
// closed collectively, and is abandoned by every rank together.
struct AbandonFile : CheckpointError {
  using CheckpointError::CheckpointError;
};

// Forgets an earlier file's failed write; call before a new file.
void begin_collective_writes();

// --- attributes (collective on create: every rank passes the same value) ---
template <typename T>
void attr_array(hid_t obj, const char* name, hid_t type, const std::vector<T>& v) {
  hsize_t n = v.size();
  H5Id sp(H5Screate_simple(1, &n, nullptr), H5Sclose);
  H5Id a(checked(H5Acreate2(obj, name, type, sp, H5P_DEFAULT, H5P_DEFAULT), std::string("create attribute ") + name), H5Aclose);
  check(H5Awrite(a, type, v.data()), std::string("write attribute ") + name);
}
// An attribute of several dimensions (v row-major over dims).
template <typename T>
void attr_dims(hid_t obj, const char* name, hid_t type, const std::vector<T>& v, int rank, const hsize_t* dims) {
  H5Id sp(H5Screate_simple(rank, dims, nullptr), H5Sclose);
  H5Id a(checked(H5Acreate2(obj, name, type, sp, H5P_DEFAULT, H5P_DEFAULT), std::string("create attribute ") + name), H5Aclose);
  if (!v.empty()) check(H5Awrite(a, type, v.data()), std::string("write attribute ") + name);
}
inline void attr_long(hid_t obj, const char* name, long v) { attr_array<long>(obj, name, H5T_NATIVE_LONG, {v}); }
inline void attr_double(hid_t obj, const char* name, double v) { attr_array<double>(obj, name, H5T_NATIVE_DOUBLE, {v}); }
inline void attr_u64(hid_t obj, const char* name, uint64_t v) { attr_array<uint64_t>(obj, name, H5T_NATIVE_UINT64, {v}); }

// Closed on scope exit, also when an error is thrown: a handle left open
// would keep the file open until HDF5's own shutdown, which can then crash.
H5Id make_group(hid_t parent, const std::string& name);

// Datasets written by one owner each cost no collective of their own: the
// owners' checksums are agreed in one all-reduce first (agree_checksums: each
// owner fills its entries, the others leave 0), then every rank creates each
// dataset with its checksum attribute and the owner writes the data
// (write_owned_floats), and one agree_written after the last of them tells
// every rank whether any write failed.
void agree_checksums(std::vector<uint64_t>& sums, MPI_Comm comm);
void write_owned_floats(hid_t loc, const std::string& name, size_t n, const float* data, uint64_t sum, int owner, int rank);
// A data write of this rank failed (errno tells why); agree_written reports it.
void note_failed_write();
// Collective: throws AbandonFile on every rank when a data write failed on any.
void agree_written(int rank, MPI_Comm comm);
// A small dataset, the same on every rank, written by rank 0.
void write_small(hid_t loc, const std::string& name, hid_t type, const std::vector<hsize_t>& dims, const void* data,
                 int rank, MPI_Comm comm);
// Before the metadata flush: checks that every rank may write `bytes` (its
// ulimit -f) and has rank 0 reserve them for `file`, so that the flush and
// close, which no rank may leave half-way, cannot fail for lack of room.
void reserve_room(double bytes, const std::string& file, int rank, MPI_Comm comm);

}  // namespace dipaco
