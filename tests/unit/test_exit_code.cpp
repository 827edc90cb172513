// What each error means to the caller: one exit code per kind of error, the
// same for every command (cmd/exit_code.hpp).
#include <gtest/gtest.h>
#include <unistd.h>

#include <new>
#include <stdexcept>

#include "dipaco/cmd/app.hpp"
#include "dipaco/cmd/exit_code.hpp"
#include "dipaco/cmd/options.hpp"
#include "dipaco/data/corpus.hpp"
#include "dipaco/io/checkpoint.hpp"
#include "dipaco/io/deck.hpp"
#include "dipaco/io/files.hpp"
#include "dipaco/io/input_error.hpp"
#include "dipaco/io/run_lock.hpp"
#include "dipaco/train/divergence.hpp"

using namespace dipaco;

TEST(ExitCode, EachErrorTypeHasItsCode) {
  EXPECT_EQ(exit_code_of(InputError("a file named on the command line")), kExitBadInput);
  EXPECT_EQ(exit_code_of(UsageError("unknown option")), kExitBadInput);
  EXPECT_EQ(exit_code_of(DeckError("bad key")), kExitBadInput);
  EXPECT_EQ(exit_code_of(CorpusError("bad corpus")), kExitBadInput);
  EXPECT_EQ(exit_code_of(DivergedError("loss nan")), kExitDiverged);
  EXPECT_EQ(exit_code_of(WriteError("cannot write")), kExitFailure);
  EXPECT_EQ(exit_code_of(CheckpointError("truncated")), kExitFailure);
  EXPECT_EQ(exit_code_of(std::runtime_error("MPI")), kExitFailure);
  EXPECT_EQ(exit_code_of(std::bad_alloc()), kExitFailure);
}

// Through a reference to the base, as main and run catch them.
TEST(ExitCode, ThrownErrorsKeepTheirCode) {
  auto code_of = [](auto&& f) {
    try {
      f();
    } catch (const std::exception& e) {
      return exit_code_of(e);
    }
    return int(kExitOk);
  };
  EXPECT_EQ(code_of([] { load_deck("", {"train.no_such_key=1"}); }), kExitBadInput);
  EXPECT_EQ(code_of([] { int_option("--tokens", "x", 1, 10); }), kExitBadInput);
  Args args = {"--path"};
  size_t i = 0;
  EXPECT_EQ(code_of([&] { option(args, i, "--path"); }), kExitBadInput);
  std::string deck;
  Args ov;
  EXPECT_EQ(code_of([&] { split_deck_args({"a.ini", "b.ini"}, deck, ov); }), kExitBadInput);
}

// A lock file that cannot be made is a failure of the run (1), not a directory in use (2).
TEST(ExitCode, LockFileNotWrittenIsAFailure) {
  const std::string file = ::testing::TempDir() + "/no_such_dir_" + std::to_string(getpid()) + "/lock";
  int fd = -1;
  try {
    take_run_lock(file, &fd);
    FAIL() << "a lock file in a missing directory was taken";
  } catch (const std::exception& e) {
    EXPECT_NE(dynamic_cast<const WriteError*>(&e), nullptr) << e.what();
    EXPECT_EQ(exit_code_of(e), kExitFailure) << e.what();
    EXPECT_NE(std::string(e.what()).find("cannot create the lock file " + file), std::string::npos) << e.what();
  }
}
