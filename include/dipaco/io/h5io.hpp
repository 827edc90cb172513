// Small HDF5 helpers shared by the checkpoint writer/reader and `dipaco inspect`:
// every failure becomes a CheckpointError naming the file and the field.
// Readers check type, rank, extent and count of everything they read before
// they allocate for it or copy it: a crafted file gets an error, never a
// huge allocation or a write past a buffer.
#pragma once
#include <utility>
#include <hdf5.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <functional>
#include <cstring>
#include <string>
#include <vector>

#include "dipaco/io/checkpoint.hpp"

namespace dipaco {

inline void check(herr_t e, const std::string& what) {
  if (e < 0) throw CheckpointError("HDF5 failed to " + what);
}
inline hid_t checked(hid_t id, const std::string& what) {
  if (id < 0) throw CheckpointError("HDF5 failed to " + what);
  return id;
}

// An open HDF5 object, closed when it goes out of scope (errors throw past
// the explicit closes). H5Oclose closes groups, datasets and named types;
// attributes, dataspaces and types need their own close.
class H5Id {
 public:
  explicit H5Id(hid_t id = -1, herr_t (*close)(hid_t) = H5Oclose) : id_(id), close_(close) {}
  H5Id(H5Id&& o) noexcept : id_(o.id_), close_(o.close_) { o.id_ = -1; }
  H5Id(const H5Id&) = delete;
  H5Id& operator=(const H5Id&) = delete;
  H5Id& operator=(H5Id&& o) noexcept {
    std::swap(id_, o.id_);
    std::swap(close_, o.close_);
    return *this;
  }
  ~H5Id() {
    if (id_ >= 0) close_(id_);
  }
  operator hid_t() const { return id_; }
  bool ok() const { return id_ >= 0; }

 private:
  hid_t id_;
  herr_t (*close_)(hid_t);
};

// The file an object belongs to, and the object's own path ("/paths/P0").
inline std::string h5_file_name(hid_t obj) {
  char buf[4096] = "";
  H5Fget_name(obj, buf, sizeof buf);
  return buf;
}
inline std::string h5_object_name(hid_t obj) {
  char buf[1024] = "";
  H5Iget_name(obj, buf, sizeof buf);
  return buf;
}
inline hsize_t h5_file_size(hid_t obj) {
  H5Id f(H5Iget_file_id(obj), H5Fclose);
  hsize_t bytes = 0;
  if (f.ok()) H5Fget_filesize(f, &bytes);
  return bytes;
}
// The path of `name` below loc: "/paths/P0/params".
inline std::string h5_child_name(hid_t loc, const std::string& name) {
  if (!name.empty() && name[0] == '/') return name;
  std::string base = h5_object_name(loc);
  return (base == "/" ? "" : base) + "/" + name;
}
// "FILE: attribute step of /paths/P0"
inline std::string h5_attr_where(hid_t obj, const char* name) {
  return h5_file_name(obj) + ": attribute " + name + " of " + h5_object_name(obj);
}

inline H5Id open_group(hid_t loc, const std::string& path) {
  H5Id g(H5Lexists(loc, path.c_str(), H5P_DEFAULT) > 0 ? H5Gopen2(loc, path.c_str(), H5P_DEFAULT) : -1);
  if (!g.ok()) throw CheckpointError(h5_file_name(loc) + ": group " + path + " is missing");
  return g;
}

// An attribute holding exactly one value of the given class (one string, one number).
inline H5Id open_attr(hid_t obj, const char* name, H5T_class_t want, const char* what) {
  H5Id a(H5Aexists(obj, name) > 0 ? H5Aopen(obj, name, H5P_DEFAULT) : -1, H5Aclose);
  if (!a.ok()) throw CheckpointError(h5_attr_where(obj, name) + " is missing");
  H5Id type(H5Aget_type(a), H5Tclose), space(H5Aget_space(a), H5Sclose);
  H5T_class_t cls = type.ok() ? H5Tget_class(type) : H5T_NO_CLASS;
  bool ok = cls == want || (want == H5T_FLOAT && cls == H5T_INTEGER);
  if (ok && cls == H5T_STRING) ok = H5Tis_variable_str(type) == 0;
  if (!ok) throw CheckpointError(h5_attr_where(obj, name) + " should be " + what);
  hssize_t n = space.ok() ? H5Sget_simple_extent_npoints(space) : -1;
  if (n != 1) throw CheckpointError(h5_attr_where(obj, name) + " should hold one value, holds " + std::to_string(n));
  return a;
}

// --- writers (from one rank, or collectively with the same values) ---
inline void write_attr_string(hid_t obj, const char* name, const std::string& v) {
  H5Id t(H5Tcopy(H5T_C_S1), H5Tclose);
  H5Tset_size(t, std::max<size_t>(1, v.size()));
  H5Id sp(H5Screate(H5S_SCALAR), H5Sclose);
  H5Id a(checked(H5Acreate2(obj, name, t, sp, H5P_DEFAULT, H5P_DEFAULT), std::string("create attribute ") + name), H5Aclose);
  check(H5Awrite(a, t, v.empty() ? "" : v.data()), std::string("write attribute ") + name);
}
inline void write_attr_long(hid_t obj, const char* name, long v) {
  H5Id sp(H5Screate(H5S_SCALAR), H5Sclose);
  H5Id a(checked(H5Acreate2(obj, name, H5T_NATIVE_LONG, sp, H5P_DEFAULT, H5P_DEFAULT), std::string("create attribute ") + name),
         H5Aclose);
  check(H5Awrite(a, H5T_NATIVE_LONG, &v), std::string("write attribute ") + name);
}
// A 1-d float dataset with its "checksum" attribute (what read_floats verifies).
inline void write_floats(hid_t loc, const std::string& name, const float* data, size_t n) {
  hsize_t dims = n;
  hid_t sp = H5Screate_simple(1, &dims, nullptr);
  hid_t d = checked(H5Dcreate2(loc, name.c_str(), H5T_NATIVE_FLOAT, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
                    "create dataset " + name);
  H5Sclose(sp);
  herr_t e = n ? H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) : 0;
  uint64_t sum = checksum(data, n * sizeof(float));
  hid_t one = H5Screate(H5S_SCALAR);
  hid_t a = H5Acreate2(d, "checksum", H5T_NATIVE_UINT64, one, H5P_DEFAULT, H5P_DEFAULT);
  herr_t e2 = a < 0 ? -1 : H5Awrite(a, H5T_NATIVE_UINT64, &sum);
  if (a >= 0) H5Aclose(a);
  H5Sclose(one), H5Dclose(d);
  if (e < 0 || e2 < 0) throw CheckpointError("HDF5 failed to write dataset " + name + " (disk full?)");
}

// A dataset of `rank` dimensions written whole (none of them zero: created empty).
inline void write_dataset(hid_t loc, const std::string& name, hid_t type, int rank, const hsize_t* dims, const void* data) {
  H5Id sp(H5Screate_simple(rank, dims, nullptr), H5Sclose);
  H5Id d(checked(H5Dcreate2(loc, name.c_str(), type, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), "create dataset " + name), H5Dclose);
  bool empty = false;
  for (int i = 0; i < rank; ++i) empty |= dims[i] == 0;
  if (!empty) check(H5Dwrite(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data), "write dataset " + name);
}

// A file written whole by one process: through PATH.tmp, renamed when complete
// and removed when not, so that a failed write leaves nothing a later run reads.
inline void write_h5_atomic(const std::string& path, const std::function<void(hid_t)>& write) {
  const std::string tmp = path + ".tmp";
  hid_t f = H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  if (f < 0) throw CheckpointError("cannot create " + tmp);
  // A file given up on (a full disk): emptied first, so that closing it has
  // room to flush; a file HDF5 could not close would crash the library's exit.
  auto abandon = [&] {
    if (::truncate(tmp.c_str(), 0) != 0) {}  // best effort: the close below says whether it worked
    if (H5Fclose(f) < 0) H5Fclose(f);
    std::remove(tmp.c_str());
  };
  try {
    write(f);
  } catch (...) {
    abandon();
    throw;
  }
  if (H5Fclose(f) < 0) {
    abandon();
    throw CheckpointError("cannot finish " + tmp + ": HDF5 could not flush and close it (disk full?)");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string why = std::strerror(errno);
    std::remove(tmp.c_str());
    throw CheckpointError("cannot finish " + tmp + ": " + why);
  }
}

inline std::string read_attr_string(hid_t obj, const char* name) {
  H5Id a = open_attr(obj, name, H5T_STRING, "a fixed-length string");
  H5Id t(H5Aget_type(a), H5Tclose);
  size_t n = H5Tget_size(t);
  if (n == 0 || n > (1u << 26) || n > h5_file_size(obj))
    throw CheckpointError(h5_attr_where(obj, name) + " claims " + std::to_string(n) + " bytes");
  // One byte more than stored: converting a full-length null-padded string
  // (as h5py writes them) to a null-terminated one of the same size drops its last character.
  std::string s(n + 1, '\0');
  H5Id mt(H5Tcopy(H5T_C_S1), H5Tclose);
  H5Tset_size(mt, n + 1);
  check(H5Aread(a, mt, s.data()), "read " + h5_attr_where(obj, name));
  s.resize(strnlen(s.c_str(), n));
  return s;
}
// A number (integer or floating point in the file), converted to T by HDF5.
template <typename T>
inline T read_attr_scalar(hid_t obj, const char* name, hid_t type) {
  H5Id a = open_attr(obj, name, H5T_FLOAT, "a number");
  T v{};
  check(H5Aread(a, type, &v), "read " + h5_attr_where(obj, name));
  return v;
}
inline long read_attr_long(hid_t obj, const char* name, long lo, long hi) {
  long v = read_attr_scalar<long>(obj, name, H5T_NATIVE_LONG);
  if (v < lo || v > hi)
    throw CheckpointError(h5_attr_where(obj, name) + " = " + std::to_string(v) + " is outside [" + std::to_string(lo) +
                          ", " + std::to_string(hi) + "]");
  return v;
}

// Opens a 1-D (or, with cols > 0, 2-D [rows, cols]) dataset of numbers and
// returns it with its row count, after checking that the file is large enough
// to hold what it claims (datasets are written uncompressed).
inline H5Id open_numbers(hid_t loc, const std::string& name, hsize_t& rows, hsize_t cols = 0) {
  const std::string where = h5_file_name(loc) + ": dataset " + h5_child_name(loc, name);
  H5Id d(H5Lexists(loc, name.c_str(), H5P_DEFAULT) > 0 ? H5Dopen2(loc, name.c_str(), H5P_DEFAULT) : -1);
  if (!d.ok()) throw CheckpointError(where + " is missing");
  H5Id type(H5Dget_type(d), H5Tclose), space(H5Dget_space(d), H5Sclose);
  H5T_class_t cls = type.ok() ? H5Tget_class(type) : H5T_NO_CLASS;
  if (cls != H5T_FLOAT && cls != H5T_INTEGER) throw CheckpointError(where + " does not hold numbers");
  int rank = space.ok() ? H5Sget_simple_extent_ndims(space) : -1;
  hsize_t dims[H5S_MAX_RANK] = {};
  if (rank < 0 || rank > H5S_MAX_RANK || H5Sget_simple_extent_dims(space, dims, nullptr) != rank)
    throw CheckpointError(where + " has an unreadable shape");
  std::string shape;
  for (int i = 0; i < rank; ++i) shape += (i ? " x " : "") + std::to_string(dims[i]);
  if (rank != (cols ? 2 : 1) || (cols && dims[1] != cols))
    throw CheckpointError(where + " has shape [" + shape + "], expected [" + (cols ? "n x " + std::to_string(cols) : "n") +
                          "]");
  // Compared in double: the product of crafted dimensions can overflow 64 bits.
  double bytes = double(dims[0]) * double(cols ? cols : 1) * double(H5Tget_size(type));
  hsize_t file_bytes = h5_file_size(loc);
  if (bytes > double(file_bytes))
    throw CheckpointError(where + " claims [" + shape + "] values (" + std::to_string(bytes) + " bytes) in a file of " +
                          std::to_string(file_bytes) + " bytes");
  rows = dims[0];
  return d;
}

// Reads a float dataset of exactly n elements and verifies its checksum.
inline void read_floats(hid_t loc, const std::string& name, size_t n, float* out, const std::string& file) {
  const std::string where = file + ": dataset " + h5_child_name(loc, name);
  hsize_t have = 0;
  H5Id d = open_numbers(loc, name, have);
  if (have != n) throw CheckpointError(where + " holds " + std::to_string(have) + " values, the deck needs " + std::to_string(n));
  uint64_t want = read_attr_scalar<uint64_t>(d, "checksum", H5T_NATIVE_UINT64);
  if (n && H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) < 0)
    throw CheckpointError(where + " cannot be read (truncated file?)");
  if (checksum(out, n * sizeof(float)) != want) throw CheckpointError(where + ": checksum mismatch");
}

// A dataset of at most max_rows rows of `cols` values (1-D with cols = 0),
// read as `mem_type` (H5T_NATIVE_DOUBLE for T = double, ...).
template <typename T>
std::vector<T> read_numbers(hid_t loc, const std::string& name, hid_t mem_type, hsize_t max_rows, hsize_t cols = 0) {
  hsize_t rows = 0;
  H5Id d = open_numbers(loc, name, rows, cols);
  if (rows > max_rows)
    throw CheckpointError(h5_file_name(loc) + ": dataset " + h5_child_name(loc, name) + " holds " + std::to_string(rows) + " rows, at most " +
                          std::to_string(max_rows) + " are possible");
  std::vector<T> v(rows * (cols ? cols : 1));
  if (!v.empty() && H5Dread(d, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data()) < 0)
    throw CheckpointError(h5_file_name(loc) + ": dataset " + h5_child_name(loc, name) + " cannot be read (truncated file?)");
  return v;
}
// The rows of a 1-D dataset handed to fn(first row, block) kBlock rows at a
// time, so that a long one (a shard's index) is never held whole; returns the rows.
template <typename T, class Fn>
hsize_t read_number_blocks(hid_t loc, const std::string& name, hid_t mem_type, hsize_t max_rows, Fn fn) {
  constexpr hsize_t kBlock = hsize_t(1) << 16;
  const std::string where = h5_file_name(loc) + ": dataset " + h5_child_name(loc, name);
  hsize_t rows = 0;
  H5Id d = open_numbers(loc, name, rows);
  if (rows > max_rows)
    throw CheckpointError(where + " holds " + std::to_string(rows) + " rows, at most " + std::to_string(max_rows) + " are possible");
  std::vector<T> buf;
  for (hsize_t first = 0; first < rows; first += kBlock) {
    hsize_t count = std::min(kBlock, rows - first);
    buf.resize(size_t(count));
    H5Id file_space(H5Dget_space(d), H5Sclose), mem(H5Screate_simple(1, &count, nullptr), H5Sclose);
    if (H5Sselect_hyperslab(file_space, H5S_SELECT_SET, &first, nullptr, &count, nullptr) < 0 ||
        H5Dread(d, mem_type, mem, file_space, H5P_DEFAULT, buf.data()) < 0)
      throw CheckpointError(where + " cannot be read (truncated file?)");
    fn(size_t(first), buf);
  }
  return rows;
}
// A small dataset of doubles (metrics).
inline std::vector<double> read_doubles(hid_t loc, const std::string& name, hsize_t max_rows, hsize_t cols = 0) {
  return read_numbers<double>(loc, name, H5T_NATIVE_DOUBLE, max_rows, cols);
}

}  // namespace dipaco
