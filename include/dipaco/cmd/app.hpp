// The subcommands behind `dipaco <command>`; main.cpp only dispatches.
#pragma once
#include <string>
#include <vector>

namespace dipaco {

// Exit codes (documented in the README).
enum ExitCode : int {
  kExitOk = 0,
  kExitFailure = 1,     // runtime failure (I/O, MPI, numerical)
  kExitBadInput = 2,    // bad deck, corpus, arguments or rank count
  kExitRequeue = 3,     // stopped on a signal or run.max_hours with a checkpoint written: resubmit to resume
  kExitPeerLost = 4,    // a collective timed out: a peer rank died or stopped responding
  kExitDiverged = 5,    // training diverged past train.diverge_limit, or met values that are not finite
};

using Args = std::vector<std::string>;

int cmd_run(const Args& args);
int cmd_deck(const Args& args);
int cmd_topology(const Args& args);
int cmd_inspect(const Args& args);
int cmd_export(const Args& args);
int cmd_evaluate(const Args& args);
int cmd_generate(const Args& args);
int cmd_route(const Args& args);
std::string usage();

// Splits "DECK.ini --a.b=c ..." into the deck path and overrides.
void split_deck_args(const Args& args, std::string& deck, Args& overrides, Args* extra_flags = nullptr);

}  // namespace dipaco
