#include "dipaco/cmd/options.hpp"

#include <mpi.h>

#include <cmath>
#include <exception>

#include "dipaco/io/input_error.hpp"

namespace dipaco {

std::string option(const Args& args, size_t& i, const std::string& name) {
  const std::string& a = args[i];
  if (a.rfind(name + "=", 0) == 0) return a.substr(name.size() + 1);
  if (i + 1 >= args.size()) throw UsageError(name + " needs a value");
  return args[++i];
}

bool is_flag(const std::string& arg, const std::string& name) { return arg == name || arg.rfind(name + "=", 0) == 0; }

// Bad text or a value out of range names the flag (std::stol alone would report only "stol").
long int_option(const std::string& name, const std::string& v, long lo, long hi) {
  size_t pos = 0;
  long x = 0;
  try {
    x = std::stol(v, &pos);
  } catch (const std::exception&) {
    pos = 0;
  }
  if (v.empty() || pos != v.size() || x < lo || x > hi)
    throw UsageError(name + " needs an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got '" + v + "'");
  return x;
}

double number_option(const std::string& name, const std::string& v, double lo, double hi, const std::string& allowed) {
  size_t pos = 0;
  double x = 0;
  try {
    x = std::stod(v, &pos);
  } catch (const std::exception&) {
    pos = 0;
  }
  if (v.empty() || pos != v.size() || !std::isfinite(x) || x < lo || x > hi)
    throw UsageError(name + " needs a number in " + allowed + ", got '" + v + "'");
  return x;
}

int with_mpi(const std::function<int()>& body) {
  int inited = 0;
  MPI_Initialized(&inited);
  if (!inited) MPI_Init(nullptr, nullptr);
  int code = kExitOk;
  try {
    code = body();
  } catch (...) {
    MPI_Finalize();
    throw;
  }
  MPI_Finalize();
  return code;
}

}  // namespace dipaco
