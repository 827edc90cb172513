// Flags of the inference commands (export, evaluate, generate, route): values
// checked against their range, errors naming the flag (UsageError: exit 2).
#pragma once
#include <functional>
#include <string>

#include "dipaco/cmd/app.hpp"

namespace dipaco {

// "--name=value" or "--name value"; advances i past the value.
std::string option(const Args& args, size_t& i, const std::string& name);
// True when args[i] is --name or --name=...
bool is_flag(const std::string& arg, const std::string& name);
long int_option(const std::string& name, const std::string& v, long lo, long hi);
// `allowed` says the range in words, e.g. "[0, 100]".
double number_option(const std::string& name, const std::string& v, double lo, double hi, const std::string& allowed);
// Runs body inside MPI (a singleton job without mpirun is fine).
int with_mpi(const std::function<int()>& body);

}  // namespace dipaco
