// `dipaco run`: the pipeline (pipeline.hpp) under mpirun, with its exit codes.
//
// Distributed code fails together: an error seen by any rank ends the whole
// job within seconds with its message printed once and its exit code. When
// every rank hits the same error (a bad deck or corpus), they find out with
// a barrier on a communicator kept for this purpose, and rank 0 reports it;
// when only some do, no healthy rank would ever reach that barrier, so after a
// short wait the failing rank reports and MPI_Abort ends the job with the code.
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <thread>

#include "dipaco/cmd/app.hpp"
#include "dipaco/cmd/exit_code.hpp"
#include "dipaco/io/deck.hpp"
#include "dipaco/io/input_error.hpp"
#include "dipaco/io/log.hpp"
#include "dipaco/cmd/pipeline.hpp"
#include "dipaco/dist/signals.hpp"
#include "dipaco/dist/watchdog.hpp"

namespace dipaco {
namespace {

// True when every rank of comm reaches here within `seconds`.
bool all_ranks_failed(MPI_Comm comm, double seconds) {
  MPI_Request req;
  MPI_Ibarrier(comm, &req);
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  int done = 0;
  while (!done && std::chrono::steady_clock::now() < until) {
    MPI_Test(&req, &done, MPI_STATUS_IGNORE);
    if (!done) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return done;
}

// Ends the job with `code` after an error on this rank. Returns only when every rank failed.
void fail_together(MPI_Comm fail_comm, int rank, int size, int code, const char* what) {
  if (size == 1 || all_ranks_failed(fail_comm, 1.5)) {
    if (rank == 0) std::fprintf(stderr, "dipaco: error: %s\n", what);
    return;
  }
  // Some ranks are healthy and blocked elsewhere. The lowest failing rank
  // speaks first; its abort usually ends the others before they print.
  std::this_thread::sleep_for(std::chrono::milliseconds(100 * std::min(rank, 20)));
  std::fprintf(stderr, "dipaco: error on rank %d: %s\n", rank, what);
  std::fflush(stderr);
  stop_watchdog();
  MPI_Abort(MPI_COMM_WORLD, code);
}

}  // namespace

int cmd_run(const Args& args) {
  install_stop_handlers();  // before anything slow: an early preemption signal must not kill a rank
  int provided;
  MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
  int rank, size;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  set_log_rank(rank);
  MPI_Comm fail_comm;
  MPI_Comm_dup(MPI_COMM_WORLD, &fail_comm);
  int code = kExitOk;
  try {
    std::string file;
    Args ov;
    split_deck_args(args, file, ov);
    if (file.empty()) throw UsageError("run needs a deck file: dipaco run DECK.ini [--section.key=value ...]");
    Deck deck = load_deck(file, ov);
    code = run_pipeline(deck, rank, size);
  } catch (const std::exception& e) {  // on every rank or only some: fail_together tells which
    fail_together(fail_comm, rank, size, code = exit_code_of(e), e.what());
  }
  stop_watchdog();
  MPI_Comm_free(&fail_comm);
  MPI_Finalize();
  return code;
}

}  // namespace dipaco
