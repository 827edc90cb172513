// What one rank of `dipaco run` will hold in memory, from the deck and the
// topology alone, so a deck too large for the machine is refused with a figure
// before anything is allocated (rather than ending in std::bad_alloc).
// The figures count the buffers the program allocates; the process itself
// (libraries, MPI, thread pools: some 40 MB) comes on top.
#pragma once
#include <mpi.h>

#include <cstddef>
#include <string>

#include "dipaco/io/deck.hpp"
#include "dipaco/model/model.hpp"
#include "dipaco/dist/topology.hpp"

namespace dipaco {

struct MemoryEstimate {
  double params = 0;       // each own path's weights + AdamW m and v, the gradient, own anchors + outer momentum
  double activations = 0;  // the training Model of the local batch, the routing features' Model
  double data = 0;         // the corpus documents and the own paths' token streams
  double buffers = 0;      // host copies: warm start, checkpoint save, outer-round and all-reduce scratch
  double total() const { return params + activations + data + buffers; }
  // "about X MB (params+optimizer A, activations B, data C, buffers D)"
  std::string describe() const;
};

// Bytes of the buffers Model(shape, B) allocates (= Model::activation_bytes()), on
// kernels with fused attention (the CPU's) or without, in bf16 with its copies.
double model_activation_bytes(const ModelShape& s, int B, bool fused_attention, bool bf16 = false);

// Rank `rank` of a run of `topo` (corpus_bytes: the size of data.corpus).
MemoryEstimate estimate_memory(const Deck& deck, const Topology& topo, int rank, double corpus_bytes);
// The size of data.corpus, 0 when it cannot be read (the run names that error).
double corpus_file_bytes(const Deck& deck);
// Memory this process may still use: MemAvailable of /proc/meminfo, or less
// when the cgroup (v2 memory.max - memory.current) allows less. 0: unknown.
double available_memory_bytes();
// This process's peak resident memory so far (VmHWM of /proc/self/status). 0: unknown.
double peak_resident_bytes();

// Collective over comm: this rank's estimate, or DeckError on every rank when
// the ranks of some node together need more than it has available.
MemoryEstimate check_memory(const Deck& deck, const Topology& topo, int rank, MPI_Comm comm = MPI_COMM_WORLD);

}  // namespace dipaco
