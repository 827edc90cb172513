// What the user gave is wrong (exit 2, cmd/exit_code.hpp): the deck
// (DeckError), the corpus (CorpusError), a command's flags (UsageError), or a
// file named on the command line. Failures of the run itself are not these.
#pragma once
#include <stdexcept>

namespace dipaco {

struct InputError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A command's flags or arguments: an unknown option, a missing or bad value.
struct UsageError : InputError {
  using InputError::InputError;
};

}  // namespace dipaco
