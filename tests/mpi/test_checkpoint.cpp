// Checkpoints over real MPI ranks with parallel HDF5: bit-exact resume
// (including a stop in the middle of an outer round), fallback from a
// corrupt latest checkpoint, and a full disk during a write.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "dipaco/io/checkpoint.hpp"
#include "harness.hpp"

using namespace dipaco;
using namespace testing_mpi;
namespace fs = std::filesystem;

namespace {

struct Session {
  std::vector<std::vector<float>> params, m, v;  // this rank's paths
  TrainSummary summary;
  std::string loaded;
  Progress progress;
};

// One `dipaco run` session in-process: load (auto), train, checkpoint.
Session session(const std::string& run_dir, std::vector<std::string> ov) {
  Deck deck = load_deck("", ov);
  auto k = make_cpu_kernels();
  auto train = shard_by_rule(corpus().train, 4, deck.route.method);
  auto val = shard_by_rule(corpus().val, 4, deck.route.method);
  Trainer t(deck, MPI_COMM_WORLD, *k, train, val, run_dir, false);
  Checkpointer c(deck, run_dir, MPI_COMM_WORLD);
  Session s;
  s.loaded = c.load(t, deck.run.restart, false);
  t.set_checkpointer(&c);
  s.summary = t.run();
  s.progress = t.progress();
  for (auto& p : t.paths()) {
    size_t n = t.layout().total;
    s.params.emplace_back(p.params.get(), p.params.get() + n);
    s.m.emplace_back(p.m.get(), p.m.get() + n);
    s.v.emplace_back(p.v.get(), p.v.get() + n);
  }
  return s;
}

std::vector<std::string> deck_for(const std::string& dir) {
  auto d = tiny_deck();
  d.insert(d.end(), {"train.steps=8", "dipaco.inner_steps=3", "eval.every=4", "run.out_dir=" + dir});
  return d;
}

TEST(Checkpoint, ResumeIsBitExactIncludingMidRound) {
  std::string dir = shared_tmpdir("exact");
  Session whole = session(dir + "/a", deck_for(dir + "/a"));
  auto d = deck_for(dir + "/b");
  d.push_back("run.stop_after=4");  // step 4 is inside the second round (H = 3)
  Session first = session(dir + "/b", d);
  ASSERT_TRUE(first.summary.stop);
  EXPECT_EQ(first.progress.step, 4);
  Session second = session(dir + "/b", d);
  EXPECT_NE(second.loaded.find("ckpt-00000004.h5"), std::string::npos) << second.loaded;
  EXPECT_FALSE(second.summary.stop);
  for (size_t i = 0; i < whole.params.size(); ++i) {
    size_t bytes = whole.params[i].size() * sizeof(float);
    EXPECT_EQ(0, std::memcmp(whole.params[i].data(), second.params[i].data(), bytes)) << "weights, path slot " << i;
    EXPECT_EQ(0, std::memcmp(whole.m[i].data(), second.m[i].data(), bytes)) << "adam m";
    EXPECT_EQ(0, std::memcmp(whole.v[i].data(), second.v[i].data(), bytes)) << "adam v";
  }
  EXPECT_EQ(whole.summary.final_eval.bpb, second.summary.final_eval.bpb);
  EXPECT_EQ(whole.progress.eval_bpb, second.progress.eval_bpb);
  EXPECT_EQ(whole.progress.rounds, second.progress.rounds);
  // The metrics files agree on every loss record.
  if (world_rank() == 0) {
    auto losses = [](const std::string& f) {
      std::ifstream in(f);
      std::string line, out;
      while (std::getline(in, line))
        if (line.find("\"type\":\"train\"") != std::string::npos) out += line + "\n";
      return out;
    };
    EXPECT_EQ(losses(dir + "/a/metrics.jsonl"), losses(dir + "/b/metrics.jsonl"));
  }
}

// A private level lives only in each path's weights: resumed bit-exactly too,
// and its deck key is one a checkpoint must match.
TEST(Checkpoint, PrivateLevelResumesBitExact) {
  std::string dir = shared_tmpdir("private");
  auto with_private = [&](const std::string& run) {
    auto d = deck_for(run);
    d.push_back("dipaco.private_levels=1");
    return d;
  };
  Session whole = session(dir + "/a", with_private(dir + "/a"));
  auto d = with_private(dir + "/b");
  d.push_back("run.stop_after=4");
  Session first = session(dir + "/b", d);
  ASSERT_TRUE(first.summary.stop);
  Session second = session(dir + "/b", d);
  EXPECT_NE(second.loaded.find("ckpt-00000004.h5"), std::string::npos) << second.loaded;
  for (size_t i = 0; i < whole.params.size(); ++i) {
    size_t bytes = whole.params[i].size() * sizeof(float);
    EXPECT_EQ(0, std::memcmp(whole.params[i].data(), second.params[i].data(), bytes)) << "weights, path slot " << i;
    EXPECT_EQ(0, std::memcmp(whole.m[i].data(), second.m[i].data(), bytes)) << "adam m";
  }
  EXPECT_EQ(whole.summary.final_eval.bpb, second.summary.final_eval.bpb);
  // The same checkpoint with every level shared does not fit.
  Deck shared = load_deck("", deck_for(dir + "/b"));
  auto diff = incompatible_keys(load_deck("", d).text(), shared);
  ASSERT_EQ(diff.size(), 1u);
  EXPECT_NE(diff[0].find("dipaco.private_levels"), std::string::npos) << diff[0];
}

TEST(Checkpoint, CorruptLatestFallsBackToPrevious) {
  std::string dir = shared_tmpdir("corrupt");
  auto d = deck_for(dir);
  d.insert(d.end(), {"checkpoint.every=2", "checkpoint.keep=3", "train.steps=6"});
  session(dir, d);
  auto all = list_checkpoints(dir + "/checkpoints");
  ASSERT_EQ(all.size(), 3u);
  if (world_rank() == 0) fs::resize_file(all[0], fs::file_size(all[0]) / 2);  // truncate the newest
  MPI_Barrier(MPI_COMM_WORLD);
  d.push_back("train.steps=8");
  Session s = session(dir, d);
  EXPECT_NE(s.loaded.find("ckpt-00000004.h5"), std::string::npos) << s.loaded;
  EXPECT_EQ(s.progress.step, 8);
}

TEST(Checkpoint, FlippedByteFailsChecksum) {
  std::string dir = shared_tmpdir("flip");
  auto d = deck_for(dir);
  d.insert(d.end(), {"checkpoint.every=2", "train.steps=4"});
  session(dir, d);
  auto all = list_checkpoints(dir + "/checkpoints");
  ASSERT_EQ(all.size(), 2u);
  if (world_rank() == 0) {
    // Flip one byte in the middle of the file: inside some path's parameters.
    std::fstream f(all[0], std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(fs::file_size(all[0]) * 3 / 4);
    char c;
    f.read(&c, 1);
    f.seekp(-1, std::ios::cur);
    c ^= 0x40;
    f.write(&c, 1);
  }
  MPI_Barrier(MPI_COMM_WORLD);
  Session s = session(dir, d);  // falls back to step 2, trains to 4 again
  EXPECT_NE(s.loaded.find("ckpt-00000002.h5"), std::string::npos) << s.loaded;
}

// A full disk: on a small real file system (a tmpfs mount, needs root) the
// second checkpoint does not fit; the previous checkpoint survives.
TEST(Checkpoint, FullDiskKeepsPreviousCheckpoint) {
  std::string dir = shared_tmpdir("full");
  auto d = deck_for(dir);
  d.insert(d.end(), {"train.steps=2"});
  session(dir, d);
  std::string good = list_checkpoints(dir + "/checkpoints").at(0);
  auto bytes = fs::file_size(good);

  // Real small file system holding the run directory.
  std::string small = dir + "/small";
  int mounted = 0;
  if (world_rank() == 0) {
    fs::create_directories(small);
    std::string cmd = "mount -t tmpfs -o size=" + std::to_string(bytes * 3 / 2 + (64 << 10)) + " tmpfs " + small + " 2>/dev/null";
    mounted = std::system(cmd.c_str()) == 0;
    if (mounted) fs::copy(dir + "/checkpoints", small + "/checkpoints");
  }
  MPI_Bcast(&mounted, 1, MPI_INT, 0, MPI_COMM_WORLD);
  std::string err;
  auto attempt = [&](const std::string& run_dir) {  // two more steps, then a checkpoint that cannot be written
    err.clear();
    auto ov = d;
    ov.push_back("train.steps=4");
    try {
      session(run_dir, ov);
    } catch (const CheckpointError& e) {
      err = e.what();
    }
  };
  auto expect_intact = [&](const std::string& run_dir) {
    MPI_Barrier(MPI_COMM_WORLD);
    auto all = list_checkpoints(run_dir + "/checkpoints");
    ASSERT_EQ(all.size(), 1u);
    EXPECT_EQ(fs::file_size(all[0]), bytes);
    for (auto& e : fs::directory_iterator(run_dir + "/checkpoints"))
      EXPECT_EQ(e.path().string().find(".tmp"), std::string::npos) << e.path();
    Session s = session(run_dir, {d.begin(), d.end()});  // the good one still loads
    EXPECT_NE(s.loaded.find("ckpt-00000002.h5"), std::string::npos);
  };
  if (mounted) {
    attempt(small);
    EXPECT_NE(err.find("the previous checkpoint " + small + "/checkpoints/ckpt-00000002.h5 is intact"), std::string::npos) << err;
    expect_intact(small);
    MPI_Barrier(MPI_COMM_WORLD);
    if (world_rank() == 0) std::system(("umount " + small).c_str());
  }
  if (!mounted) GTEST_SKIP() << "no small file system: mounting a tmpfs needs root";
}

// The space preflight's estimate follows the real file: the datasets written
// plus the measured metadata, for a dense and a 2x2 deck and a tiny model.
TEST(Checkpoint, SpaceEstimateNearTheRealSize) {
  const std::string src = DIPACO_SOURCE_DIR;
  struct Case {
    std::string deck;
    std::vector<std::string> ov;
  };
  for (const Case& c : {Case{"dense.ini", {}}, Case{"dipaco-2x2.ini", {}},
                        Case{"dense.ini", {"model.d_model=32", "model.n_layers=2", "model.context=64"}}}) {
    std::string dir = shared_tmpdir("estimate");
    auto ov = c.ov;
    ov.insert(ov.end(), {"train.steps=1", "eval.every=0", "eval.batches=1", "run.threads=1", "run.out_dir=" + dir});
    Deck deck = load_deck(src + "/inputs/" + c.deck, ov);
    Topology topo = make_topology(deck.dipaco.modules_per_level, world_size());
    auto k = make_cpu_kernels();
    Trainer t(deck, MPI_COMM_WORLD, *k, shard_by_rule(corpus().train, topo.paths, deck.route.method),
              shard_by_rule(corpus().val, topo.paths, deck.route.method), dir, false);
    Checkpointer ckpt(deck, dir, MPI_COMM_WORLD);
    const double estimate = checkpoint_bytes(t, params_groups(t, MPI_COMM_WORLD));
    std::string file = ckpt.save(t);
    // Measured by rank 0 alone: the next case's shared_tmpdir (rank 0) removes the directory.
    double real = world_rank() == 0 ? double(fs::file_size(file)) : 0.0;
    MPI_Bcast(&real, 1, MPI_DOUBLE, 0, MPI_COMM_WORLD);
    if (world_rank() == 0)
      std::printf("checkpoint of %s %s: estimate %.0f bytes, file %.0f bytes (%+.1f%%)\n", c.deck.c_str(),
                  c.ov.empty() ? "" : "(tiny)", estimate, real, 100 * (estimate - real) / real);
    EXPECT_NEAR(estimate / real, 1.0, 0.3) << c.deck;
    EXPECT_GE(estimate, real) << "the preflight must not let a checkpoint through that cannot fit";
  }
}

TEST(Checkpoint, ShapeChangeRefusedWithKeysNamed) {
  std::string dir = shared_tmpdir("shape");
  auto d = deck_for(dir);
  d.push_back("train.steps=2");
  session(dir, d);
  d.push_back("model.d_model=64");
  try {
    session(dir, d);
    FAIL() << "expected a refusal";
  } catch (const DeckError& e) {
    EXPECT_NE(std::string(e.what()).find("model.d_model (checkpoint: 32, deck: 64)"), std::string::npos) << e.what();
  }
}

}  // namespace
