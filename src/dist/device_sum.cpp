#include "dipaco/dist/device_sum.hpp"

#include <stdexcept>

#ifdef DIPACO_HAVE_NCCL
#include <cuda_runtime.h>
#include <dlfcn.h>
#include <nccl.h>
#endif

namespace dipaco {
namespace {

// Whether every rank of comm says yes.
[[maybe_unused]] bool all_agree(bool mine, MPI_Comm comm) {
  int v = mine ? 1 : 0, all = 0;
  MPI_Allreduce(&v, &all, 1, MPI_INT, MPI_MIN, comm);
  return all == 1;
}

#ifdef DIPACO_HAVE_NCCL
// The NCCL entry points this file uses, from dlopen.
struct Nccl {
  void* lib = nullptr;
  decltype(&ncclGetUniqueId) get_unique_id = nullptr;
  decltype(&ncclCommInitRank) init_rank = nullptr;
  decltype(&ncclAllReduce) all_reduce = nullptr;
  decltype(&ncclCommDestroy) destroy = nullptr;
  decltype(&ncclCommAbort) abort = nullptr;
  decltype(&ncclGetErrorString) error_string = nullptr;

  // Empty on success, else why not.
  std::string load() {
    lib = dlopen("libnccl.so.2", RTLD_NOW | RTLD_LOCAL);
    if (!lib) return std::string("cannot load libnccl.so.2: ") + dlerror();
    auto sym = [&](auto& f, const char* name) {
      f = reinterpret_cast<std::remove_reference_t<decltype(f)>>(dlsym(lib, name));
      return f != nullptr;
    };
    if (!sym(get_unique_id, "ncclGetUniqueId") || !sym(init_rank, "ncclCommInitRank") ||
        !sym(all_reduce, "ncclAllReduce") || !sym(destroy, "ncclCommDestroy") || !sym(abort, "ncclCommAbort") ||
        !sym(error_string, "ncclGetErrorString"))
      return "libnccl.so.2 lacks an NCCL 2 entry point";
    return {};
  }
};

class NcclSum final : public DeviceSum {
 public:
  NcclSum(const Nccl& api, ncclComm_t comm) : api_(api), comm_(comm) {}
  ~NcclSum() override { api_.destroy(comm_); }
  void sum(float* x, size_t n) override {
    // The legacy default stream, the CUDA kernels' own: ordered after the
    // backward that wrote x and before the optimizer that reads it.
    const ncclResult_t r = api_.all_reduce(x, x, n, ncclFloat, ncclSum, comm_, cudaStreamLegacy);
    if (r != ncclSuccess) throw std::runtime_error(std::string("NCCL all-reduce of a path: ") + api_.error_string(r));
  }

 private:
  Nccl api_;
  ncclComm_t comm_;
};

std::unique_ptr<DeviceSum> make_nccl(MPI_Comm comm, std::string* why) {
  static Nccl api;  // loaded once per process, never unloaded
  static const std::string load_error = api.load();
  if (!all_agree(load_error.empty(), comm)) {
    *why = load_error.empty() ? "another rank of the path cannot load libnccl.so.2" : load_error;
    return nullptr;
  }
  int rank = 0, size = 0;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  ncclUniqueId id{};
  ncclResult_t r = ncclSuccess;
  if (rank == 0) r = api.get_unique_id(&id);
  if (!all_agree(r == ncclSuccess, comm)) {
    *why = "ncclGetUniqueId failed on the path's first rank";
    return nullptr;
  }
  MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, comm);
  ncclComm_t nc = nullptr;
  r = api.init_rank(&nc, size, id, rank);
  // NCCL needs a GPU per rank: two ranks of a path on one GPU fail here, on every rank.
  if (!all_agree(r == ncclSuccess, comm)) {
    *why = r == ncclSuccess ? "ncclCommInitRank failed on another rank of the path"
                            : std::string("ncclCommInitRank: ") + api.error_string(r);
    if (r == ncclSuccess) api.abort(nc);
    return nullptr;
  }
  return std::make_unique<NcclSum>(api, nc);
}
#endif

}  // namespace

std::unique_ptr<DeviceSum> make_device_sum(PathAllreduce mode, const Kernels& k, MPI_Comm comm, std::string* why) {
  std::unique_ptr<DeviceSum> s;
  if (mode == PathAllreduce::mpi) {
    *why = "run.path_allreduce = mpi";
  } else if (!k.device_memory()) {
    *why = "the kernels are " + k.name() + "'s, in host memory";
  } else {
#ifdef DIPACO_HAVE_NCCL
    s = make_nccl(comm, why);
#else
    (void)comm;
    *why = "this build has no NCCL header";
#endif
  }
  if (!s && mode == PathAllreduce::nccl) throw std::runtime_error("run.path_allreduce = nccl, but NCCL cannot be used: " + *why);
  return s;
}

}  // namespace dipaco
