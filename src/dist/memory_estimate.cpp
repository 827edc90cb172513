#include "dipaco/dist/memory_estimate.hpp"

#include "dipaco/data/input_files.hpp"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "dipaco/model/layers.hpp"
#include "dipaco/train/trainer.hpp"

namespace dipaco {

namespace {
// Floats of one layer's saved activations, as Model::layer_floats lays them out.
double layer_floats(const ModelShape& s, int B, bool fused) {
  const double N = double(B) * s.T, C = s.C;
  return N * 16 * C + double(attention_saved_floats(fused, B, s.H, s.T)) + 4 * N;
}
}  // namespace

double model_activation_bytes(const ModelShape& s, int B, bool fused_attention, bool bf16) {
  const double N = double(B) * s.T, C = s.C, scratch = double(attention_scratch_floats(fused_attention, B, s.H, s.T));
  // bf16: the weights' copy, each layer's 4 matmul inputs (7NC), lnf's, and a gradient's (Model::Model)
  const double copies = bf16 ? 2 * (double(make_layout(s).total) + 7 * N * C * s.L + N * C + N * std::max(4 * C, double(s.V)))
                             : 0;
  // acts, encoded, lnf + 2 row stats, logits, losses, dres, dbuf_a/b/c, dqkv, attention scratch
  return 4 * (layer_floats(s, B, fused_attention) * s.L + N * C + N * C + 2 * N + N * s.V + N + N * C + 4 * N * C +
              4 * N * C + N * C + 3 * N * C + scratch) +
         copies;
}

MemoryEstimate estimate_memory(const Deck& deck, const Topology& topo, int rank, double corpus_bytes) {
  const ModelShape shape = model_shape(deck);
  const ParamLayout layout = make_layout(shape);
  const double A = 4.0 * double(layout.total);  // one full arena in bytes
  const double own = double(topo.paths_of_rank(rank).size());
  const bool replicas = deck.dipaco.replica_mode == ReplicaMode::diloco;
  const int micro = replicas ? 0 : deck.train.micro_batch;
  const int local_batch = replicas ? deck.train.batch_size : micro > 0 ? micro : deck.train.batch_size / topo.ranks_per_path;
  MemoryEstimate e;

  // Sync units: the embeddings when shared (every rank), each module whose communicator holds this rank.
  double units = 0, largest = 0, largest_comm = 1;
  auto unit = [&](size_t floats, const std::vector<int>& ranks, bool mine) {
    largest = std::max(largest, 4.0 * double(floats));
    if (!mine) return;
    units += 4.0 * double(floats);
    largest_comm = std::max(largest_comm, double(ranks.size()));
  };
  if (deck.dipaco.shared == SharedGroups::embeddings) unit(layout.groups[0].size, std::vector<int>(topo.ranks), true);
  for (int l = 0; l < topo.levels(); ++l) {
    // A private level: a unit per path only where DiLoCo replicas average it.
    if (topo.is_private(l)) {
      if (replicas && topo.ranks_per_path > 1)
        for (int p : topo.paths_of_rank(rank)) unit(layout.groups[1 + l].size, topo.ranks_of_path(p), true);
      continue;
    }
    for (int m = 0; m < topo.modules_per_level[l]; ++m) {
      const auto ranks = topo.module_ranks(l, m);
      unit(layout.groups[1 + l].size, ranks, std::binary_search(ranks.begin(), ranks.end(), rank));
    }
  }

  e.params = own * 3 * A + A + 2 * units + (deck.train.early_stop == EarlyStop::path ? own * A : 0);
  // The training Model, and the routing features' Model of a whole batch (allocated, hence written: the
  // CPU backend zeroes what it allocates).
  // Fused attention saves no probabilities: the CPU's always, CUDA's up to its widest head.
  const bool fused = deck.run.device == Device::cpu || shape.C / shape.H <= kCudaFusedAttentionMaxHead;
  const bool bf16 = deck.train.precision == Precision::bf16;
  e.activations =
      model_activation_bytes(shape, local_batch, fused, bf16) + model_activation_bytes(shape, deck.train.batch_size, fused, bf16);
  // The text stays on disk in the mapped token store; what is held is a view of each
  // document (about 150 bytes with the shards' and streams' entries, for documents of
  // about 4 KB: the embedded corpus's mean).
  e.data = corpus_bytes * 150.0 / 4096.0;

  // Warm-start weights and the routing model's copy; a checkpoint's host copies (one path's arena
  // and moments, a module's anchor and momentum); the outer round's delta and host sums (three float, one int64).
  e.buffers = 2 * A + 3 * A + 2 * largest + 5 * largest;
  if (deck.dipaco.inner_steps > 0) {
    e.buffers += own * largest;  // each own path's outer gradient
    if (deck.dipaco.outer_dtype != OuterDtype::fp32) {
      // Every unit's ring at once: the outer gradients of all units, the rings' encoded buffers
      // (bf16 at most half the floats), their chunk sums and the units' sums.
      e.buffers += own * (A - largest) + A / 2 + 3 * A;
      if (deck.dipaco.error_feedback == ErrorFeedback::on) e.params += own * A, e.buffers += own * A;  // residuals, their host copies
      if (deck.dipaco.overlap_steps > 0) e.buffers += own * A;  // the paths' weights at the post
    } else if (largest_comm > 1) {
      e.buffers += 2 * largest;  // MPI's scratch for the int64 all-reduce
    }
  }
  if (micro > 0) {
    const int terms = (deck.train.batch_size / micro + topo.ranks_per_path - 1) / topo.ranks_per_path;
    e.buffers += terms * A + A + 2 * A + (topo.ranks_per_path > 1 ? 2 * A : 0);  // terms, sum, int64 sum, MPI scratch
  } else if (topo.ranks_per_path > 1 && !replicas) {
    e.buffers += A;  // MPI's scratch for the in-place gradient all-reduce
  }
  return e;
}

std::string MemoryEstimate::describe() const {
  char s[256];
  std::snprintf(s, sizeof s, "about %.0f MB (params+optimizer %.0f, activations %.0f, data %.0f, buffers %.0f)",
                total() / 1e6, params / 1e6, activations / 1e6, data / 1e6, buffers / 1e6);
  return s;
}

double corpus_file_bytes(const Deck& deck) {
  double n = 0;
  try {
    for (const std::string* spec : {&deck.data.corpus, &deck.data.val})
      if (!spec->empty())
        for (const auto& f : expand_inputs(*spec)) {
          std::error_code ec;
          const auto b = std::filesystem::file_size(f, ec);
          n += ec ? 0.0 : double(b);
        }
  } catch (const CorpusError&) {
    return n;  // prepare names what is wrong with the inputs
  }
  return n;
}

double available_memory_bytes() {
  double avail = 0;
  std::ifstream meminfo("/proc/meminfo");
  for (std::string key; meminfo >> key;) {
    double kb = 0;
    meminfo >> kb;
    if (key == "MemAvailable:") avail = kb * 1024;
    meminfo.ignore(1 << 10, '\n');
  }
  // cgroup v2: the limit ("max" when none) less what the group already uses.
  std::ifstream max_file("/sys/fs/cgroup/memory.max"), cur_file("/sys/fs/cgroup/memory.current");
  std::string max;
  double cur = 0;
  if (max_file >> max && max != "max" && cur_file >> cur) {
    const double left = std::max(0.0, std::stod(max) - cur);
    if (avail == 0 || left < avail) avail = left;
  }
  return avail;
}

double peak_resident_bytes() {
  std::ifstream status("/proc/self/status");
  for (std::string key; status >> key;) {
    if (key == "VmHWM:") {
      double kb = 0;
      return status >> kb ? kb * 1024 : 0;
    }
    status.ignore(1 << 10, '\n');
  }
  return 0;
}

MemoryEstimate check_memory(const Deck& deck, const Topology& topo, int rank, MPI_Comm comm) {
  const MemoryEstimate e = estimate_memory(deck, topo, rank, corpus_file_bytes(deck));
  // On a GPU the model's buffers are device memory, which MemAvailable does not describe: printed, not enforced.
  if (deck.run.device != Device::cpu) return e;
  // Ranks on one node share its memory.
  MPI_Comm node;
  MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node);
  int node_ranks;
  MPI_Comm_size(node, &node_ranks);
  double need = e.total();
  MPI_Allreduce(MPI_IN_PLACE, &need, 1, MPI_DOUBLE, MPI_SUM, node);
  MPI_Comm_free(&node);
  const double avail = available_memory_bytes();
  struct {
    double ratio;
    int rank;
  } mine{avail > 0 ? need / avail : 0.0, rank}, worst;
  MPI_Allreduce(&mine, &worst, 1, MPI_DOUBLE_INT, MPI_MAXLOC, comm);
  if (worst.ratio <= 1) return e;
  // The figures of the fullest node, the same message on every rank.
  double f[7] = {e.params, e.activations, e.data, e.buffers, need, avail, double(node_ranks)};
  MPI_Bcast(f, 7, MPI_DOUBLE, worst.rank, comm);
  const MemoryEstimate w{f[0], f[1], f[2], f[3]};
  char tail[512];
  std::snprintf(tail, sizeof tail,
                ": %.0f rank(s) on a node need about %.0f MB together and it has %.0f MB available (MemAvailable, or the "
                "cgroup's memory.max); use a smaller model (model.d_model, model.n_layers, model.context), a smaller "
                "train.batch_size or train.micro_batch, or fewer ranks per node",
                f[6], f[4] / 1e6, f[5] / 1e6);
  throw DeckError("memory per rank: " + w.describe() + " does not fit" + tail);
}

}  // namespace dipaco
