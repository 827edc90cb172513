// Command-line dispatch only; each command lives in its own file.
#include <cstdio>
#include <exception>

#include "dipaco/cmd/app.hpp"
#include "dipaco/cmd/exit_code.hpp"
#include "dipaco_git.hpp"  // generated: the commit this binary was built from

int main(int argc, char** argv) {
  using namespace dipaco;
  Args args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    std::printf("%s", usage().c_str());
    return args.empty() ? kExitBadInput : kExitOk;
  }
  if (args[0] == "--version") {
    std::printf("dipaco %s (%s)\n", DIPACO_VERSION, DIPACO_GIT);
    return kExitOk;
  }
  std::string cmd = args[0];
  args.erase(args.begin());
  try {
    if (cmd == "run") return cmd_run(args);
    if (cmd == "deck") return cmd_deck(args);
    if (cmd == "topology") return cmd_topology(args);
    if (cmd == "inspect") return cmd_inspect(args);
    if (cmd == "export") return cmd_export(args);
    if (cmd == "evaluate") return cmd_evaluate(args);
    if (cmd == "generate") return cmd_generate(args);
    if (cmd == "route") return cmd_route(args);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dipaco: error: %s\n", e.what());
    return exit_code_of(e);
  }
  std::fprintf(stderr, "dipaco: unknown command '%s'\n\n%s", cmd.c_str(), usage().c_str());
  return kExitBadInput;
}
