// GoogleTest's main, with a scratch directory for the files the tests write
// (::testing::TempDir()), removed when the tests end.
#include <gtest/gtest.h>

#include "scratch_dir.hpp"

int main(int argc, char** argv) {
  static ScratchDir scratch;
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
