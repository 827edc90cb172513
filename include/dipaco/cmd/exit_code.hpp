// What an error means to the caller of `dipaco`: the one map from exception
// types to the exit codes of app.hpp, for every command.
#pragma once
#include <exception>

namespace dipaco {

// InputError (deck, corpus, flags, input files) → kExitBadInput; DivergedError
// → kExitDiverged; anything else (I/O, checkpoints, MPI) → kExitFailure.
// Requeue and peer-lost exits are not errors: they are returned or _exit'ed.
int exit_code_of(const std::exception& e);

}  // namespace dipaco
