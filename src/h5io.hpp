// Small HDF5 helpers shared by the checkpoint writer/reader and `dipaco inspect`:
// every failure becomes a CheckpointError naming what failed.
#pragma once
#include <hdf5.h>

#include <cstring>
#include <string>

#include "dipaco/checkpoint.hpp"

namespace dipaco {

inline void check(herr_t e, const std::string& what) {
  if (e < 0) throw CheckpointError("HDF5 failed to " + what);
}
inline hid_t checked(hid_t id, const std::string& what) {
  if (id < 0) throw CheckpointError("HDF5 failed to " + what);
  return id;
}


inline std::string read_attr_string(hid_t obj, const char* name) {
  hid_t a = checked(H5Aopen(obj, name, H5P_DEFAULT), std::string("open attribute ") + name);
  hid_t t = H5Aget_type(a);
  size_t n = H5Tget_size(t);
  if (n > (1u << 26)) throw CheckpointError(std::string("attribute ") + name + " claims " + std::to_string(n) + " bytes");
  std::string s(n, '\0');
  hid_t mt = H5Tcopy(H5T_C_S1);
  H5Tset_size(mt, n);
  check(H5Aread(a, mt, s.data()), std::string("read attribute ") + name);
  H5Tclose(mt), H5Tclose(t), H5Aclose(a);
  s.resize(strnlen(s.c_str(), n));
  return s;
}
template <typename T>
inline T read_attr_scalar(hid_t obj, const char* name, hid_t type) {
  hid_t a = checked(H5Aopen(obj, name, H5P_DEFAULT), std::string("open attribute ") + name);
  hid_t sp = H5Aget_space(a);
  hssize_t n = H5Sget_simple_extent_npoints(sp);
  H5Sclose(sp);
  if (n != 1) {
    H5Aclose(a);
    throw CheckpointError(std::string("attribute ") + name + " should hold one value, holds " + std::to_string(n));
  }
  T v{};
  check(H5Aread(a, type, &v), std::string("read attribute ") + name);
  H5Aclose(a);
  return v;
}


// Reads a float dataset of exactly n elements and verifies its checksum.
inline void read_floats(hid_t loc, const std::string& name, size_t n, float* out, const std::string& file) {
  hid_t d = H5Dopen2(loc, name.c_str(), H5P_DEFAULT);
  if (d < 0) throw CheckpointError(file + ": dataset " + name + " is missing");
  hid_t sp = H5Dget_space(d);
  hssize_t have = H5Sget_simple_extent_npoints(sp);
  H5Sclose(sp);
  if (have != hssize_t(n)) {
    H5Dclose(d);
    throw CheckpointError(file + ": dataset " + name + " holds " + std::to_string(have) + " values, the deck needs " +
                          std::to_string(n));
  }
  herr_t e = H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, out);
  uint64_t want = 0;
  try {
    want = read_attr_scalar<uint64_t>(d, "checksum", H5T_NATIVE_UINT64);
  } catch (...) {
    H5Dclose(d);
    throw;
  }
  H5Dclose(d);
  if (e < 0) throw CheckpointError(file + ": cannot read dataset " + name);
  if (checksum(out, n * sizeof(float)) != want) throw CheckpointError(file + ": checksum mismatch in " + name);
}

}  // namespace dipaco
