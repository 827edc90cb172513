// A scratch directory for one test process: created under $TMPDIR (or /tmp),
// named in TEST_TMPDIR so that ::testing::TempDir() returns it, and removed
// with everything in it when the process ends, by returning from main or by
// exit() (a run's fatal error in a test ends the process that way: the object
// is a static). Only the process that made it removes it, not a forked child.
#pragma once
#include <stdlib.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>

class ScratchDir {
 public:
  ScratchDir() : owner_(getpid()) {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/dipaco_test_XXXXXX";
    if (!mkdtemp(tmpl.data())) return;  // TempDir() stays /tmp: the tests still run
    path_ = tmpl;
    setenv("TEST_TMPDIR", path_.c_str(), 1);
  }
  ~ScratchDir() {
    std::error_code ignored;
    if (!path_.empty() && getpid() == owner_) std::filesystem::remove_all(path_, ignored);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;

 private:
  pid_t owner_;
  std::string path_;
};
