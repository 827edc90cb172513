#include "dipaco/cmd/options.hpp"

#include <mpi.h>

#include "dipaco/io/input_error.hpp"
#include "dipaco/io/parse_number.hpp"

namespace dipaco {

std::string option(const Args& args, size_t& i, const std::string& name) {
  const std::string& a = args[i];
  if (a.rfind(name + "=", 0) == 0) return a.substr(name.size() + 1);
  if (i + 1 >= args.size()) throw UsageError(name + " needs a value");
  return args[++i];
}

bool is_flag(const std::string& arg, const std::string& name) { return arg == name || arg.rfind(name + "=", 0) == 0; }

long int_option(const std::string& name, const std::string& v, long lo, long hi) {
  if (const auto x = parse_integer(v, lo, hi)) return long(*x);
  throw UsageError(name + " needs an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got '" + v + "'");
}

double number_option(const std::string& name, const std::string& v, double lo, double hi, const std::string& allowed) {
  if (const auto x = parse_real(v, lo, hi)) return *x;
  throw UsageError(name + " needs a number in " + allowed + ", got '" + v + "'");
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
