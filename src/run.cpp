// `dipaco run`: the pipeline (pipeline.hpp) under mpirun, with its exit codes.
#include <mpi.h>

#include <cstdio>

#include "dipaco/app.hpp"
#include "dipaco/checkpoint.hpp"
#include "dipaco/corpus.hpp"
#include "dipaco/deck.hpp"
#include "dipaco/signals.hpp"
#include "dipaco/pipeline.hpp"
#include "dipaco/watchdog.hpp"

namespace dipaco {

int cmd_run(const Args& args) {
  install_stop_handlers();  // before anything slow: an early preemption signal must not kill a rank
  int provided;
  MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
  int rank, size;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  int code = kExitOk;
  try {
    std::string file;
    Args ov;
    split_deck_args(args, file, ov);
    if (file.empty()) throw DeckError("run needs a deck file: dipaco run DECK.ini [--section.key=value ...]");
    Deck deck = load_deck(file, ov);
    code = run_pipeline(deck, rank, size);
  } catch (const DeckError& e) {  // the same on every rank: report once, exit together
    if (rank == 0) std::fprintf(stderr, "dipaco: error: %s\n", e.what());
    code = kExitBadInput;
  } catch (const CorpusError& e) {
    if (rank == 0) std::fprintf(stderr, "dipaco: error: %s\n", e.what());
    code = kExitBadInput;
  } catch (const CheckpointError& e) {  // agreed on by every rank before it is thrown
    if (rank == 0) std::fprintf(stderr, "dipaco: error: %s\n", e.what());
    code = kExitFailure;
  } catch (const std::exception& e) {  // may be on one rank only: do not let the others hang
    std::fprintf(stderr, "dipaco: error on rank %d: %s\n", rank, e.what());
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, kExitFailure);
  }
  stop_watchdog();
  MPI_Finalize();
  return code;
}

}  // namespace dipaco
