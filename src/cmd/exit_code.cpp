#include "dipaco/cmd/exit_code.hpp"

#include "dipaco/cmd/app.hpp"
#include "dipaco/io/input_error.hpp"
#include "dipaco/train/divergence.hpp"

namespace dipaco {

int exit_code_of(const std::exception& e) {
  if (dynamic_cast<const InputError*>(&e)) return kExitBadInput;
  if (dynamic_cast<const DivergedError*>(&e)) return kExitDiverged;
  return kExitFailure;
}

}  // namespace dipaco
