// Checkpoint readers: the input is an HDF5 file. It is written to a temporary
// file and read the way `dipaco run` restores it (read_checkpoint, against the
// tiny deck in checkpoint.ini) and the way `dipaco inspect` prints it. Only
// CheckpointError or DeckError may come out, and every HDF5 handle must be
// closed afterwards (a leaked file handle would also serve the next input).
#include <hdf5.h>
#include <mpi.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "dipaco/cmd/app.hpp"
#include "dipaco/io/checkpoint.hpp"
#include "dipaco/io/deck.hpp"
#include "dipaco/model/model.hpp"
#include "dipaco/train/trainer.hpp"

using namespace dipaco;

namespace {

Deck g_deck;
std::vector<CheckpointGroup> g_groups;
std::string g_file;

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  MPI_Init(argc, argv);
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);  // errors become exceptions; no HDF5 error stacks
  std::freopen("/dev/null", "w", stdout);       // inspect's printout
  g_deck = load_deck(DIPACO_SOURCE_DIR "/tests/fuzz/checkpoint.ini");
  ModelShape s;
  s.C = g_deck.model.d_model, s.L = g_deck.model.n_layers, s.H = g_deck.model.n_heads, s.T = g_deck.model.context;
  s.layers_per_level = g_deck.model.layers_per_level;
  ParamLayout layout = make_layout(s);
  // Verification only (no destinations are written): the groups one rank of a 1-rank run restores.
  g_groups = {{"/paths", layout.total, {{"params", nullptr}, {"adam_m", nullptr}, {"adam_v", nullptr}}, 0, 0},
              {"/modules/embeddings", layout.groups[0].size, {{"anchor", nullptr}, {"momentum", nullptr}}},
              {"/modules/L0/M0", layout.groups[1].size, {{"anchor", nullptr}, {"momentum", nullptr}}}};
  const char* tmp = std::getenv("TMPDIR");
  g_file = std::string(tmp ? tmp : "/tmp") + "/fuzz_checkpoint_" + std::to_string(getpid()) + ".h5";
  std::atexit([] { std::remove(g_file.c_str()); });
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::ofstream(g_file, std::ios::binary | std::ios::trunc).write(reinterpret_cast<const char*>(data), std::streamsize(size));
  try {
    read_checkpoint(g_file, MPI_COMM_SELF, g_deck, 1, g_groups, nullptr, false);
  } catch (const CheckpointError&) {
  } catch (const DeckError&) {
    try {  // the deck differs: read it as --run.restart_force=1 would
      read_checkpoint(g_file, MPI_COMM_SELF, g_deck, 1, g_groups, nullptr, true);
    } catch (const CheckpointError&) {
    }
  }
  for (Args args : {Args{g_file}, Args{g_file, "--layout"}}) {
    try {
      cmd_inspect(args);
    } catch (const CheckpointError&) {
    } catch (const InputError&) {  // a deck, or a file that is no checkpoint: exit 2, named
    }
  }
  if (ssize_t open = H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL); open != 0) {
    std::fprintf(stderr, "%zd HDF5 handle(s) left open after reading the input\n", open);
    std::abort();
  }
  return 0;
}
