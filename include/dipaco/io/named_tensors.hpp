// One path's parameters as named HDF5 datasets, one per tensor, under a
// group: "wte" [V, C], "wpe" [T, C], "lnf.weight" [C], "blocks.3.attn.qkv.weight"
// [C, 3C], ... (the names and shapes of make_layout). Each dataset carries
// "layout" (how to apply it) and "checksum" (checksum() of checkpoint.hpp, of its fp32 bytes).
//
// Layout: a linear layer's weight is [in, out] and applies as y = x W + b;
// attn.qkv's output columns are q, k, v (each C wide, heads of C/H
// consecutive); wte [V, C] is also the output head (logits = lnf(x) wte^T).
#pragma once
#include <hdf5.h>

#include <string>
#include <vector>

#include "dipaco/model/model.hpp"

namespace dipaco {

// Which of a layout's groups to write or read: the embedding group, the
// blocks of level l's group, or all.
enum class TensorSet { all, embeddings, blocks };

// Writes the views of the groups in `set` (level `level` for blocks), from
// arena `params`, as datasets in `loc` (blocks keep their whole-model numbers).
void write_tensors(hid_t loc, const ParamLayout& layout, const float* params, TensorSet set, int level = -1);
// Reads them back into the arena; throws CheckpointError naming the dataset
// (missing, wrong shape, checksum) and the file.
void read_tensors(hid_t loc, const ParamLayout& layout, float* params, TensorSet set, int level = -1);
// "[in, out]: y = x W + b" and the like, for a view name.
std::string tensor_layout(const std::string& name);

}  // namespace dipaco
