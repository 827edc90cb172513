// Crafted checkpoint files: every field the readers use is checked before it
// is used, and a file that disagrees with the deck gets a CheckpointError
// naming the file and the field, never a huge allocation or a read past a
// buffer. Each rank crafts and reads its own files (MPI_COMM_SELF).
#include <gtest/gtest.h>
#include <hdf5.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <functional>

#include "dipaco/cmd/app.hpp"
#include "dipaco/cmd/trained_model.hpp"
#include "dipaco/io/checkpoint.hpp"
#include "dipaco/io/h5io.hpp"
#include "harness.hpp"

using namespace dipaco;
using namespace testing_mpi;
namespace fs = std::filesystem;

namespace {

std::vector<std::string> small_deck() {
  auto d = tiny_deck();
  d.insert(d.end(), {"train.steps=2", "eval.every=1", "checkpoint.every=2"});
  return d;
}

// Trains small_deck() plus `extra` on this rank alone into dir, with its
// checkpoints; returns every path's final weights.
std::vector<std::vector<float>> train_small(const std::string& dir, std::vector<std::string> extra) {
  auto ov = small_deck();
  ov.insert(ov.end(), extra.begin(), extra.end());
  ov.push_back("run.out_dir=" + dir);
  Deck deck = load_deck("", ov);
  auto k = make_cpu_kernels();
  auto train = shard_by_rule(corpus().train, 4, deck.route.method);
  auto val = shard_by_rule(corpus().val, 4, deck.route.method);
  Trainer t(deck, MPI_COMM_SELF, *k, train, val, dir, false);
  Checkpointer c(deck, dir, MPI_COMM_SELF);
  t.set_checkpointer(&c);
  t.run();
  std::vector<std::vector<float>> out;
  for (auto& ps : t.paths()) out.emplace_back(ps.params.get(), ps.params.get() + t.layout().total);
  return out;
}

// This rank's directory with one valid checkpoint of small_deck() (4 paths, 2x2).
const std::string& valid_checkpoint() {
  static std::string file = [] {
    int rank;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    std::string dir = ::testing::TempDir() + "/dipaco_files_" + std::to_string(getpid()) + "_" + std::to_string(rank);
    fs::remove_all(dir);
    train_small(dir, {});
    return list_checkpoints(dir + "/checkpoints").at(0);
  }();
  return file;
}

// Every group a 1-rank run restores, verified only (no destinations).
std::vector<CheckpointGroup> all_groups(const Deck& deck) {
  ParamLayout layout = make_layout(model_shape(deck));
  std::vector<CheckpointGroup> g;
  for (int p = 0; p < 4; ++p)
    g.push_back({"/paths", layout.total, {{"params", nullptr}, {"adam_m", nullptr}, {"adam_v", nullptr}}, p, 0});
  g.push_back({"/modules/embeddings", layout.groups[0].size, {{"anchor", nullptr}, {"momentum", nullptr}}});
  for (int l = 0; l < 2; ++l)
    for (int m = 0; m < 2; ++m)
      g.push_back({"/modules/L" + std::to_string(l) + "/M" + std::to_string(m), layout.groups[1 + l].size,
                   {{"anchor", nullptr}, {"momentum", nullptr}}});
  return g;
}

// A copy of the valid checkpoint, changed by `edit` through the HDF5 C API.
std::string crafted(const std::string& name, const std::function<void(hid_t)>& edit) {
  std::string file = fs::path(valid_checkpoint()).parent_path().string() + "/" + name + ".h5";
  fs::copy_file(valid_checkpoint(), file, fs::copy_options::overwrite_existing);
  hid_t f = H5Fopen(file.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  edit(f);
  H5Fclose(f);
  return file;
}

// Replaces a dataset by an empty one (no storage written) of the given shape.
void replace_dataset(hid_t f, const char* path, std::vector<hsize_t> dims, hid_t type = H5T_NATIVE_FLOAT) {
  H5Ldelete(f, path, H5P_DEFAULT);
  hid_t sp = H5Screate_simple(int(dims.size()), dims.data(), nullptr);
  hid_t d = H5Dcreate2(f, path, type, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  H5Dclose(d), H5Sclose(sp);
}

// Replaces an attribute of the object at `obj` by `n` fixed-length strings (or
// one variable-length string with n = 0).
void replace_string_attr(hid_t f, const char* obj, const char* name, int n, const std::string& v,
                         H5T_str_t pad = H5T_STR_NULLTERM) {
  H5Adelete_by_name(f, obj, name, H5P_DEFAULT);
  hid_t t = H5Tcopy(H5T_C_S1);
  H5Tset_size(t, n ? v.size() : H5T_VARIABLE);
  H5Tset_strpad(t, pad);
  hsize_t count = std::max(n, 1);
  hid_t sp = H5Screate_simple(1, &count, nullptr);
  hid_t a = H5Acreate_by_name(f, obj, name, t, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  std::string repeated;
  for (int i = 0; i < n; ++i) repeated += v;
  const char* p = v.c_str();
  H5Awrite(a, t, n ? static_cast<const void*>(repeated.data()) : static_cast<const void*>(&p));
  H5Aclose(a), H5Sclose(sp), H5Tclose(t);
}

void replace_long_attr(hid_t f, const char* obj, const char* name, std::vector<long> v) {
  H5Adelete_by_name(f, obj, name, H5P_DEFAULT);
  hsize_t n = v.size();
  hid_t sp = H5Screate_simple(1, &n, nullptr);
  hid_t a = H5Acreate_by_name(f, obj, name, H5T_NATIVE_LONG, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  H5Awrite(a, H5T_NATIVE_LONG, v.data());
  H5Aclose(a), H5Sclose(sp);
}

// Copies attribute `name` of one object to another.
void copy_attr(hid_t from, hid_t to, const char* name) {
  hid_t a = H5Aopen(from, name, H5P_DEFAULT), t = H5Aget_type(a), sp = H5Aget_space(a);
  std::vector<char> buf(H5Tget_size(t) * size_t(H5Sget_simple_extent_npoints(sp)));
  H5Aread(a, t, buf.data());
  hid_t b = H5Acreate2(to, name, t, sp, H5P_DEFAULT, H5P_DEFAULT);
  H5Awrite(b, t, buf.data());
  H5Aclose(b), H5Sclose(sp), H5Tclose(t), H5Aclose(a);
}

// Adds 1 to one value of a [paths, replicas, columns] path array, in place.
void bump_value(hid_t f, const char* path, hsize_t p, hsize_t col) {
  hid_t d = H5Dopen2(f, path, H5P_DEFAULT), fs = H5Dget_space(d);
  const hsize_t start[3] = {p, 0, col}, count[3] = {1, 1, 1};
  H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, nullptr, count, nullptr);
  hsize_t one = 1;
  hid_t ms = H5Screate_simple(1, &one, nullptr);
  float v = 0;
  H5Dread(d, H5T_NATIVE_FLOAT, ms, fs, H5P_DEFAULT, &v);
  v += 1;
  H5Dwrite(d, H5T_NATIVE_FLOAT, ms, fs, H5P_DEFAULT, &v);
  H5Sclose(ms), H5Sclose(fs), H5Dclose(d);
}

// The error read_checkpoint gives for `file` ("" when it reads fine).
std::string read_error(const std::string& file) {
  Deck deck = load_deck("", small_deck());
  try {
    read_checkpoint(file, MPI_COMM_SELF, deck, 4, all_groups(deck), nullptr, false);
  } catch (const CheckpointError& e) {
    return e.what();
  }
  return "";
}

std::string inspect_error(const std::vector<std::string>& args) {
  try {
    cmd_inspect(args);
  } catch (const CheckpointError& e) {
    return e.what();
  }
  return "";
}

#define EXPECT_HAS(text, part) EXPECT_NE(std::string(text).find(part), std::string::npos) << (text)

TEST(CheckpointFiles, ValidFileReads) {
  EXPECT_EQ(read_error(valid_checkpoint()), "");
  EXPECT_EQ(H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL), 0) << "the reader left HDF5 handles open";
}

TEST(CheckpointFiles, DatasetClaimingTwoToTheFortyValues) {
  std::string file = crafted("huge", [](hid_t f) { replace_dataset(f, "/paths/adam_m", {4, 1, hsize_t(1) << 40}); });
  std::string e = read_error(file);
  EXPECT_HAS(e, file + ": dataset /paths/adam_m claims [4 x 1 x 1099511627776] values, more than the file holds");
  file = crafted("huge-anchor", [](hid_t f) { replace_dataset(f, "/modules/L0/M1/anchor", {hsize_t(1) << 40}); });
  e = read_error(file);
  EXPECT_HAS(e, file + ": dataset /modules/L0/M1/anchor claims [1099511627776] values");
  EXPECT_HAS(e, "in a file of");
  EXPECT_EQ(H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL), 0) << "an error left HDF5 handles open";
}

TEST(CheckpointFiles, DatasetWithWrongShapeOrLength) {
  Deck deck = load_deck("", small_deck());
  size_t total = make_layout(model_shape(deck)).total;
  // Reshaped with its attributes (groups, checksums) kept: the shape is what is wrong.
  std::string file = crafted("shape", [&](hid_t f) {
    hid_t d = H5Dopen2(f, "/paths/adam_m", H5P_DEFAULT);
    hsize_t dims[3] = {2, 2, total};
    hid_t sp = H5Screate_simple(3, dims, nullptr);
    hid_t n = H5Dcreate2(f, "/paths/m2", H5T_NATIVE_FLOAT, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    for (const char* a : {"groups", "checksums"}) copy_attr(d, n, a);
    H5Dclose(n), H5Sclose(sp), H5Dclose(d);
    H5Ldelete(f, "/paths/adam_m", H5P_DEFAULT);
    H5Lmove(f, "/paths/m2", f, "/paths/adam_m", H5P_DEFAULT, H5P_DEFAULT);
  });
  EXPECT_HAS(read_error(file), file + ": dataset /paths/adam_m has shape [2 x 2 x " + std::to_string(total) + "], expected [4 x 1 x " +
                                   std::to_string(total) + "]");
  file = crafted("length", [&](hid_t f) { replace_dataset(f, "/modules/L1/M0/anchor", {7}); });
  EXPECT_HAS(read_error(file), file + ": dataset /modules/L1/M0/anchor holds 7 values, the deck needs");
  file = crafted("type", [&](hid_t f) {
    hid_t s = H5Tcopy(H5T_C_S1);
    H5Tset_size(s, 4);
    replace_dataset(f, "/paths/params", {4, 1, total}, s);
    H5Tclose(s);
  });
  EXPECT_HAS(read_error(file), file + ": dataset /paths/params does not hold numbers");
}

TEST(CheckpointFiles, TruncatedFile) {
  std::string file = crafted("truncated", [](hid_t) {});
  fs::resize_file(file, fs::file_size(file) / 2);
  std::string e = read_error(file);
  EXPECT_HAS(e, file + ": ");
  fs::resize_file(file, 100);
  EXPECT_HAS(read_error(file), file + ": not a readable HDF5 file");
}

TEST(CheckpointFiles, AttributesOfTheWrongKind) {
  std::string file = crafted("array", [](hid_t f) { replace_string_attr(f, "/", "deck", 2, "[model]\n"); });
  EXPECT_HAS(read_error(file), file + ": attribute deck of / should hold one value, holds 2");
  file = crafted("vlen", [](hid_t f) { replace_string_attr(f, "/", "deck", 0, "[model]\n"); });
  EXPECT_HAS(read_error(file), file + ": attribute deck of / should be a fixed-length string");
  file = crafted("step", [](hid_t f) { replace_long_attr(f, "/", "inner_step", {-5}); });
  EXPECT_HAS(read_error(file), file + ": attribute inner_step of / = -5 is outside [0, ");
  file = crafted("pathstep", [](hid_t f) { replace_long_attr(f, "/paths", "steps", {2, 2, 2, 1}); });
  EXPECT_HAS(read_error(file), file + ": path 3 (attribute steps of /paths) is at step 1, the checkpoint at 2");
  file = crafted("pathsteps", [](hid_t f) { replace_long_attr(f, "/paths", "steps", {2, 2, 2}); });
  EXPECT_HAS(read_error(file), file + ": attribute steps of /paths holds 3 values, expected 4");
  file = crafted("nochecksum", [](hid_t f) { H5Adelete_by_name(f, "/paths/adam_v", "checksums", H5P_DEFAULT); });
  EXPECT_HAS(read_error(file), file + ": attribute checksums of /paths/adam_v is missing");
  file = crafted("groups", [](hid_t f) { replace_string_attr(f, "/paths/adam_v", "groups", 1, "L1\nembeddings\nL0\n"); });
  EXPECT_HAS(read_error(file), file + ": attribute groups of /paths/adam_v is not in arena order");
  file = crafted("version", [](hid_t f) { replace_long_attr(f, "/", "format_version", {1}); });
  EXPECT_HAS(read_error(file), file + ": checkpoint format version 1, this build reads version 2 (an older dipaco wrote it");
  EXPECT_HAS(inspect_error({file}), "checkpoint format version 1, this build reads version 2");
}

TEST(CheckpointFiles, EachPieceOfAPathArrayIsChecked) {
  Deck deck = load_deck("", small_deck());
  const ParamLayout layout = make_layout(model_shape(deck));
  std::string file = crafted("piece", [&](hid_t f) { bump_value(f, "/paths/adam_m", 2, layout.groups[1].offset + 5); });
  EXPECT_HAS(read_error(file), file + ": dataset /paths/adam_m: checksum mismatch in group L0 of path 2");
}

// The attribute `groups` of /paths/params in `file`, and its column count.
std::pair<std::string, hsize_t> params_groups(const std::string& file) {
  hid_t f = H5Fopen(file.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), d = H5Dopen2(f, "/paths/params", H5P_DEFAULT);
  hid_t sp = H5Dget_space(d);
  hsize_t dims[3] = {};
  H5Sget_simple_extent_dims(sp, dims, nullptr);
  H5Sclose(sp);
  std::string groups = read_attr_string(d, "groups");
  H5Dclose(d), H5Fclose(f);
  return {groups, dims[2]};
}

// Right after an outer round every path's copy of a module is its anchor:
// the checkpoint stores it once (params has no columns), and readers put the
// paths back together from the anchors; in the middle of a round every path's
// own copy is stored.
TEST(CheckpointFiles, SharedGroupsStoredOnceAtARoundBoundary) {
  Deck deck = load_deck("", small_deck());
  const ParamLayout layout = make_layout(model_shape(deck));
  std::string dir = fs::path(valid_checkpoint()).parent_path().string() + "/boundary";
  const auto trained = train_small(dir, {"train.steps=6", "checkpoint.every=2"});  // rounds end at 3 and 6
  const std::string mid = dir + "/checkpoints/ckpt-00000004.h5", file = dir + "/checkpoints/ckpt-00000006.h5";
  EXPECT_EQ(params_groups(mid), std::make_pair(std::string("embeddings\nL0\nL1\n"), hsize_t(layout.total)));
  EXPECT_EQ(params_groups(file), std::make_pair(std::string(""), hsize_t(0)));
  EXPECT_EQ(read_error(file), "");
  EXPECT_EQ(read_error(mid), "");
  const TrainedModel m = open_trained_model(file);
  for (int p = 0; p < 4; ++p)
    EXPECT_EQ(m.params(p), trained[p]) << p;
  // A reader that needs an anchor for a path's weights says which.
  std::string broken = dir + "/noanchor.h5";
  fs::copy_file(file, broken, fs::copy_options::overwrite_existing);
  hid_t f = H5Fopen(broken.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  H5Ldelete(f, "/modules/L1/M1/anchor", H5P_DEFAULT);
  H5Fclose(f);
  EXPECT_HAS(inspect_error({broken}), broken + ": dataset /modules/L1/M1/anchor is missing");
}

// h5py writes fixed-length strings null-padded, without a terminator when
// they fill their size: they must be read whole.
TEST(CheckpointFiles, NullPaddedStringsReadWhole) {
  std::string file = crafted("nullpad", [](hid_t f) { replace_string_attr(f, "/", "dipaco_version", 1, "9.8.7", H5T_STR_NULLPAD); });
  testing::internal::CaptureStdout();
  EXPECT_EQ(cmd_inspect({file, "--json"}), 0);
  EXPECT_HAS(testing::internal::GetCapturedStdout(), "\"dipaco_version\":\"9.8.7\"");
}

TEST(CheckpointFiles, MissingGroupAndDisagreeingMetrics) {
  std::string file = crafted("nogroup", [](hid_t f) { H5Ldelete(f, "/modules/L1/M0", H5P_DEFAULT); });
  EXPECT_HAS(read_error(file), file + ": group /modules/L1/M0 is missing");
  // One row of per-path values less than there are evaluations: a resumed run
  // would later have written past the end of this array into the next checkpoint.
  file = crafted("metrics", [](hid_t f) { replace_dataset(f, "/metrics/eval_path_bpb", {1, 4}, H5T_NATIVE_DOUBLE); });
  EXPECT_HAS(read_error(file), file + ": datasets /metrics/eval_step, eval_bpb and eval_path_bpb disagree");
  file = crafted("metrics-cols", [](hid_t f) { replace_dataset(f, "/metrics/eval_path_bpb", {3, 5}, H5T_NATIVE_DOUBLE); });
  EXPECT_HAS(read_error(file), file + ": dataset /metrics/eval_path_bpb has shape [3 x 5], expected [n x 4]");
}

TEST(CheckpointFiles, InspectChecksBeforeAllocating) {
  testing::internal::CaptureStdout();
  std::string file = crafted("arena", [](hid_t f) {
    replace_string_attr(f, "/paths", "arena_groups", 1, "embeddings:0:1099511627776\n");
  });
  EXPECT_HAS(inspect_error({file}), file + ": attribute arena_groups of /paths claims 4 path(s) of 1099511627776 values");
  file = crafted("arena-text", [](hid_t f) { replace_string_attr(f, "/paths", "arena_groups", 1, "embeddings:0:-3\n"); });
  EXPECT_HAS(inspect_error({file}), "arena_groups of /paths: '-3' is not a count");
  file = crafted("holders", [](hid_t f) { replace_string_attr(f, "/modules/embeddings", "paths", 1, "0,x"); });
  EXPECT_HAS(inspect_error({file}), file + ": attribute paths of /modules/embeddings: 'x' is not a count");
  // --layout lists a dataset of rank 12 (more dimensions than it used to have room for).
  file = crafted("rank", [](hid_t f) { replace_dataset(f, "/metrics/deep", std::vector<hsize_t>(12, 1)); });
  EXPECT_EQ(cmd_inspect({file, "--layout"}), 0);
  std::string out = testing::internal::GetCapturedStdout();
  EXPECT_HAS(out, "/metrics/deep  [1 x 1 x 1 x 1 x 1 x 1 x 1 x 1 x 1 x 1 x 1 x 1]");
  EXPECT_EQ(H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL), 0);
}

// A checkpoint that fails late (after its weights verified) must not leave
// its weights in the trainer: the run starts from the fresh initialisation.
TEST(CheckpointFiles, FailedLoadLeavesTrainerUntouched) {
  std::string dir = fs::path(valid_checkpoint()).parent_path().string() + "/late";
  fs::create_directories(dir + "/checkpoints");
  crafted("late/checkpoints/ckpt-00000002", [](hid_t f) { H5Ldelete(f, "/metrics/eval_bpb", H5P_DEFAULT); });
  Deck deck = load_deck("", small_deck());
  auto k = make_cpu_kernels();
  auto train = shard_by_rule(corpus().train, 4, deck.route.method);
  auto val = shard_by_rule(corpus().val, 4, deck.route.method);
  Trainer fresh(deck, MPI_COMM_SELF, *k, train, val, "", false), t(deck, MPI_COMM_SELF, *k, train, val, "", false);
  Checkpointer c(deck, fs::path(dir).string(), MPI_COMM_SELF);
  EXPECT_EQ(c.load(t, "auto", false), "");
  size_t n = t.layout().total;
  for (size_t i = 0; i < t.paths().size(); ++i) {
    EXPECT_EQ(0, std::memcmp(t.paths()[i].params.get(), fresh.paths()[i].params.get(), n * sizeof(float))) << i;
    EXPECT_EQ(t.paths()[i].step, 0);
  }
  EXPECT_EQ(t.progress().step, 0);
}

}  // namespace
