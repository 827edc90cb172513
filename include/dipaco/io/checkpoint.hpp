// HDF5 checkpoints, written with parallel HDF5: every dataset is created
// collectively and written by the one rank that owns it (a path by its
// leader, a module's anchor by the lowest rank of its communicator), so the
// full model is never gathered on one rank.
//
// Layout (dipaco inspect --layout prints it):
//   /                 attrs: format_version, dipaco_version, git_commit, deck, world_size,
//                            stage, outer_round, inner_step, wall_time
//   /topology         attrs: levels, modules_per_level, private_levels (a 0/1 flag per level),
//                            paths; dataset path_table [P, levels] (routing index per level)
//   /modules/<unit>/  anchor, momentum [n] float; index: names, offsets, shapes. Units:
//                     embeddings, L<l>/M<m> (shared), and with DiLoCo replicas a path's own
//                     path_embeddings/P<p> and L<l>/P<p> (a private level); a private level
//                     without replicas has no unit: its weights live only in the path's row of /paths/params
//   /paths/           params, adam_m, adam_v [paths, replicas, columns] float, one row a path
//                     (and DiLoCo replica); params leaves out the groups equal to their anchors
//                     (src/io/path_arrays: which, and how a reader puts a path back together);
//                     attrs: arena_groups, replicas, steps, shard_tokens
//   /metrics/         eval_step, eval_bpb
// Each float dataset carries a "checksum" attribute (checksum() below, of its
// bytes; the path arrays one per piece, "checksums"), verified on load.
//
// Safety: written as <name>.tmp, flushed, closed, then renamed; `latest` names
// the newest; the checkpoint.keep last written are kept. A checkpoint that fails to
// open or verify is skipped with a warning for the previous one. A fresh start
// moves earlier checkpoints to checkpoints.stale/.
#pragma once
#include <mpi.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "dipaco/io/deck.hpp"

namespace dipaco {

class Kernels;
class Trainer;
struct Progress;

struct CheckpointError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The format_version attribute this build writes and reads.
// 2: the path arrays as one dataset per kind (1: a group per path).
constexpr long kCheckpointFormat = 2;

class Checkpointer {
 public:
  Checkpointer(const Deck& deck, const std::string& run_dir, MPI_Comm world);
  // Collective. Returns the path written. Throws CheckpointError, or
  // DivergedError when a value it would hold is not finite (the previous
  // checkpoint is untouched).
  std::string save(Trainer& t);
  // Collective. restart: "auto" (newest valid in the run directory), "never",
  // or a checkpoint path. Returns the path loaded, or "" when starting fresh
  // (earlier checkpoints then moved aside).
  std::string load(Trainer& t, const std::string& restart, bool force);
  std::string dir() const { return dir_; }

 private:
  std::string start_fresh(const std::string& why);  // collective; returns ""

  const Deck& deck_;
  std::string dir_;
  MPI_Comm world_;
  int rank_;
};

// One group of a checkpoint that a rank restores: float datasets of `size`
// values each and where they go (device memory).
struct CheckpointGroup {
  std::string path;  // "/modules/L0/M1"; a path's arrays: "/paths"
  size_t size = 0;
  std::vector<std::pair<std::string, float*>> datasets;  // name -> destination (a path: the whole arena)
  int path_id = -1, replica = 0;  // a path's row of /paths/params, adam_m, adam_v; its step must be the file's
};

// The reading half of Checkpointer::load, without a Trainer. Collective over
// comm (parallel HDF5). Checks every attribute, shape and checksum against
// the deck and `paths` before using it; with kernels null it only verifies,
// else it copies into the destinations. Throws CheckpointError naming the
// file and the field, or DeckError when the deck's shape keys differ (unless force).
Progress read_checkpoint(const std::string& file, MPI_Comm comm, const Deck& deck, int paths,
                         const std::vector<CheckpointGroup>& groups, Kernels* kernels, bool force);

// Keys whose change makes a checkpoint unusable (shapes or topology).
std::vector<std::string> incompatible_keys(const std::string& saved_deck_text, const Deck& now);
// Newest first: checkpoints in dir (ckpt-<step>.h5).
std::vector<std::string> list_checkpoints(const std::string& dir);

// src/io/checkpoint_dir.cpp
// The order a resume tries the checkpoints of dir in: the one `latest` names
// (when it exists), then the others newest first.
std::vector<std::string> resume_order(const std::string& dir);
// "the previous checkpoint DIR/ckpt-….h5 is intact" (the one `latest` names,
// else the newest), or "no checkpoint exists yet": for error messages.
std::string checkpoint_status(const std::string& dir);
// Removes all but the `keep` last written checkpoints; never `written`.
void rotate_checkpoints(const std::string& dir, const std::string& written, int keep);
// Renames a non-empty dir to dir.stale (replacing an older one) and recreates
// it empty; returns the new name, or "" when there was nothing to move.
std::string move_checkpoints_aside(const std::string& dir);
// Collective: the arena groups /paths/params stores (src/io/path_arrays.hpp:
// all but those equal to their anchors in every path).
std::vector<int> params_groups(Trainer& t, MPI_Comm comm);
// Bytes a checkpoint of this trainer takes on disk (the space preflight), its
// params storing the groups `stored`.
double checkpoint_bytes(Trainer& t, const std::vector<int>& stored);
// The checksum of every dataset: FNV-1a's step (xor a byte, multiply by the
// prime 1099511628211) from the offset basis 1469598103934665603, which is not
// FNV's (14695981039346656037): an FNV-1a-like 64-bit hash, kept for the format.
uint64_t checksum(const void* data, size_t bytes);

}  // namespace dipaco
