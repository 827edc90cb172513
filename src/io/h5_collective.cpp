#include "dipaco/io/h5_collective.hpp"

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "dipaco/dist/watchdog.hpp"

namespace dipaco {

namespace {
// A failed data write (a full disk, a file-size limit) is agreed on by all
// ranks right after the write, and the job then ends without closing the
// file: HDF5 cannot flush metadata collectively once one rank's write failed
// (the ranks end up in different collectives and wait forever).
bool g_data_write_failed = false;
int g_write_errno = 0;

void note_failure(int err) {
  if (g_data_write_failed) return;
  g_data_write_failed = true;
  g_write_errno = err ? err : EIO;
}
void note_write(herr_t e) {
  if (e < 0) note_failure(errno);
}

}  // namespace

void note_failed_write() { note_failure(errno); }

void agree_written(int rank, MPI_Comm comm) {
  CollectiveScope wait("agreeing on a checkpoint write");
  int who = g_data_write_failed ? rank + 1 : 0, err = g_write_errno;
  MPI_Allreduce(MPI_IN_PLACE, &who, 1, MPI_INT, MPI_MAX, comm);
  if (!who) return;
  MPI_Bcast(&err, 1, MPI_INT, who - 1, comm);
  throw AbandonFile("a write failed on rank " + std::to_string(who - 1) + " (" + std::strerror(err) + ")");
}

void begin_collective_writes() {
  g_data_write_failed = false;
  g_write_errno = 0;
}

H5Id make_group(hid_t parent, const std::string& name) {
  CollectiveScope wait("creating a checkpoint group");
  return H5Id(checked(H5Gcreate2(parent, name.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), "create group " + name));
}

void agree_checksums(std::vector<uint64_t>& sums, MPI_Comm comm) {
  CollectiveScope wait("agreeing on a checkpoint's checksums");
  MPI_Allreduce(MPI_IN_PLACE, sums.data(), int(sums.size()), MPI_UINT64_T, MPI_SUM, comm);
}

void write_owned_floats(hid_t loc, const std::string& name, size_t n, const float* data, uint64_t sum, int owner, int rank) {
  CollectiveScope wait("writing a checkpoint dataset");  // one dataset: the wait for a peer, not the whole file
  hsize_t dims = n;
  H5Id sp(H5Screate_simple(1, &dims, nullptr), H5Sclose);
  H5Id d(checked(H5Dcreate2(loc, name.c_str(), H5T_NATIVE_FLOAT, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
                 "create dataset " + name));
  attr_u64(d, "checksum", sum);
  errno = 0;
  if (rank == owner) note_write(H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, data));
}

void write_small(hid_t loc, const std::string& name, hid_t type, const std::vector<hsize_t>& dims, const void* data,
                 int rank, MPI_Comm comm) {
  H5Id sp(H5Screate_simple(int(dims.size()), dims.data(), nullptr), H5Sclose);
  H5Id d(checked(H5Dcreate2(loc, name.c_str(), type, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), "create dataset " + name));
  errno = 0;
  if (rank == 0) note_write(H5Dwrite(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data));
  agree_written(rank, comm);
}

// `bytes` is the space preflight's estimate (a little above the real size;
// HDF5 does not report a parallel file's size before it is closed).
void reserve_room(double bytes, const std::string& file, int rank, MPI_Comm comm) {
  const off_t want = off_t(bytes);
  struct rlimit rl;
  if (getrlimit(RLIMIT_FSIZE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && off_t(rl.rlim_cur) < want) note_failure(EFBIG);
  if (rank == 0 && !g_data_write_failed) {
    const int fd = ::open(file.c_str(), O_WRONLY);
    int e = 0;
    if (fd < 0) e = errno;
    else if (::fallocate(fd, 0, 0, want) != 0) e = errno;  // no emulation where unsupported
    if (fd >= 0) ::close(fd);
    if (e && e != EOPNOTSUPP && e != EINVAL) note_failure(e);
  }
  agree_written(rank, comm);
}

}  // namespace dipaco
