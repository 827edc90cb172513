#include "dipaco/io/named_tensors.hpp"

#include "dipaco/io/checkpoint.hpp"
#include "dipaco/io/h5io.hpp"

namespace dipaco {

std::string tensor_layout(const std::string& name) {
  if (name == "wte") return "[V, C]: token embedding rows; also the output head, logits = lnf(x) wte^T";
  if (name == "wpe") return "[T, C]: learned position embedding rows, added to the token's";
  if (name.ends_with("attn.qkv.weight"))
    return "[in C, out 3C]: y = x W + b; out columns are q, k, v (C each), heads of C/H consecutive columns";
  if (name.ends_with(".weight") && (name.find("ln") != std::string::npos)) return "[C]: LayerNorm gain (eps 1e-5)";
  if (name.ends_with(".bias") && (name.find("ln") != std::string::npos)) return "[C]: LayerNorm bias";
  if (name.ends_with(".weight")) return "[in, out]: y = x W + b";
  return "[out]: bias added after x W";
}

namespace {

bool selected(const ParamGroup& g, TensorSet set, int level) {
  if (set == TensorSet::all) return true;
  if (set == TensorSet::embeddings) return g.level < 0;
  return g.level >= 0 && (level < 0 || g.level == level);
}

void write_tensor(hid_t loc, const ParamView& v, const float* x) {
  std::vector<hsize_t> dims(v.shape.begin(), v.shape.end());
  H5Id space(H5Screate_simple(int(dims.size()), dims.data(), nullptr), H5Sclose);
  H5Id d(H5Dcreate2(loc, v.name.c_str(), H5T_IEEE_F32LE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Dclose);
  if (!d.ok()) throw CheckpointError("cannot create dataset " + v.name);
  check(H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, x), "writing " + v.name);
  write_attr_string(d, "layout", tensor_layout(v.name));
  uint64_t sum = checksum(x, v.size() * sizeof(float));
  H5Id as(H5Screate(H5S_SCALAR), H5Sclose);
  H5Id a(H5Acreate2(d, "checksum", H5T_NATIVE_UINT64, as, H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  check(H5Awrite(a, H5T_NATIVE_UINT64, &sum), "writing the checksum of " + v.name);
}

void read_tensor(hid_t loc, const ParamView& v, float* x) {
  const std::string where = h5_file_name(loc) + ": dataset " + h5_child_name(loc, v.name);
  H5Id d(H5Lexists(loc, v.name.c_str(), H5P_DEFAULT) > 0 ? H5Dopen2(loc, v.name.c_str(), H5P_DEFAULT) : -1, H5Dclose);
  if (!d.ok()) throw CheckpointError(where + " is missing");
  H5Id space(H5Dget_space(d), H5Sclose);
  hsize_t dims[H5S_MAX_RANK] = {};
  const int rank = space.ok() ? H5Sget_simple_extent_ndims(space) : -1;
  bool same = rank == int(v.shape.size()) && H5Sget_simple_extent_dims(space, dims, nullptr) == rank;
  for (int i = 0; same && i < rank; ++i) same = dims[i] == hsize_t(v.shape[i]);
  if (!same) throw CheckpointError(where + " does not have the shape the deck gives (" + tensor_layout(v.name) + ")");
  if (H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, x) < 0) throw CheckpointError(where + " cannot be read");
  if (checksum(x, v.size() * sizeof(float)) != read_attr_scalar<uint64_t>(d, "checksum", H5T_NATIVE_UINT64))
    throw CheckpointError(where + ": checksum mismatch");
}

}  // namespace

void write_tensors(hid_t loc, const ParamLayout& layout, const float* params, TensorSet set, int level) {
  for (const auto& g : layout.groups)
    if (selected(g, set, level))
      for (const auto& v : g.views) write_tensor(loc, v, params + g.offset + v.offset);
}

void read_tensors(hid_t loc, const ParamLayout& layout, float* params, TensorSet set, int level) {
  for (const auto& g : layout.groups)
    if (selected(g, set, level))
      for (const auto& v : g.views) read_tensor(loc, v, params + g.offset + v.offset);
}

}  // namespace dipaco
