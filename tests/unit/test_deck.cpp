// Input decks: defaults, overrides, and a clear error for every kind of bad input.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>

#include "dipaco/cmd/app.hpp"
#include "dipaco/io/checkpoint.hpp"
#include "dipaco/io/deck.hpp"
#include "dipaco/io/stamp.hpp"
#include "dipaco/dist/fault.hpp"
#include "dipaco/dist/topology.hpp"

using namespace dipaco;

namespace {

std::string write_deck(const std::string& text) {
  static int n = 0;
  // The process id too: ctest -j runs this binary's tests side by side.
  std::string path = ::testing::TempDir() + "/deck_" + std::to_string(getpid()) + "_" + std::to_string(n++) + ".ini";
  std::ofstream(path) << text;
  return path;
}

std::string error_of(const std::string& text, std::vector<std::string> ov = {}) {
  try {
    load_deck(text.empty() ? "" : write_deck(text), ov);
  } catch (const DeckError& e) {
    return e.what();
  }
  return "";
}

std::string error_of_file(const std::string& file) {
  try {
    load_deck(file);
  } catch (const DeckError& e) {
    return e.what();
  }
  return "";
}

TEST(Deck, DefaultsAndOverrides) {
  Deck d = load_deck(write_deck("[train]\nlr = 0.01\nsteps = 7\n"), {"--train.steps=9", "model.d_model=64"});
  EXPECT_DOUBLE_EQ(d.train.lr, 0.01);
  EXPECT_EQ(d.train.steps, 9);  // the command line wins over the file
  EXPECT_EQ(d.model.d_model, 64);
  EXPECT_EQ(d.model.layers_per_level, std::vector<int>{4});
  EXPECT_NE(d.text().find("[train]\nsteps = 9"), std::string::npos);
}

TEST(Deck, UnknownKeyNamesFileLineAndClosestKey) {
  std::string e = error_of("[run]\nname = x\n\n[train]\nlearning_rate = 1\n");
  EXPECT_NE(e.find(":5:"), std::string::npos) << e;
  EXPECT_NE(e.find("train.learning_rate"), std::string::npos) << e;
  e = error_of("[train]\nlrr = 1\n");
  EXPECT_NE(e.find("did you mean train.lr?"), std::string::npos) << e;
}

TEST(Deck, UnknownOverrideNamesClosestKey) {
  std::string e = error_of("", {"--train.stepz=3"});
  EXPECT_NE(e.find("command line"), std::string::npos) << e;
  EXPECT_NE(e.find("did you mean train.steps?"), std::string::npos) << e;
}

// A prefix of a key is not the key: Boost's guessing would set train.warmup from --train.warm.
TEST(Deck, OverrideByPrefixIsRefused) {
  std::string e = error_of("", {"--train.warm=3"});
  EXPECT_NE(e.find("did you mean train.warmup?"), std::string::npos) << e;
  e = error_of("", {"--model.d_mode=64"});
  EXPECT_NE(e.find("did you mean model.d_model?"), std::string::npos) << e;
}

TEST(Deck, WrongTypeNamesKeyValueAndAllowed) {
  std::string e = error_of("[train]\nsteps = many\n");
  EXPECT_NE(e.find("'many'"), std::string::npos) << e;
  EXPECT_NE(e.find("train.steps"), std::string::npos) << e;
  EXPECT_NE(e.find("an integer in [0,"), std::string::npos) << e;
  e = error_of("", {"train.lr=fast"});
  EXPECT_NE(e.find("train.lr"), std::string::npos) << e;
}

TEST(Deck, OutOfRangeAndBadChoice) {
  EXPECT_NE(error_of("", {"data.val_fraction=1.5"}).find("a number in [0, 0.9]"), std::string::npos);
  std::string e = error_of("", {"train.precision=fp8"});
  EXPECT_NE(e.find("one of fp32|tf32|bf16"), std::string::npos) << e;
  EXPECT_NE(error_of("", {"model.d_model=0"}).find("model.d_model"), std::string::npos);
}

TEST(Deck, MissingFileSaysWhichPath) {
  try {
    load_deck("/nonexistent/deck.ini");
    FAIL();
  } catch (const DeckError& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/deck.ini"), std::string::npos);
  }
}

TEST(Deck, MalformedLine) {
  EXPECT_NE(error_of("[train]\njust words\n").find(":2:"), std::string::npos);
}

TEST(Deck, LayersMustSumToModelLayers) {
  std::string e = error_of("", {"model.n_layers=4", "model.layers_per_level=2,1", "dipaco.modules_per_level=2,2"});
  EXPECT_NE(e.find("sums to 3 blocks"), std::string::npos) << e;
}

TEST(Deck, LevelsMustMatch) {
  std::string e = error_of("", {"model.layers_per_level=2,2", "dipaco.modules_per_level=2,2,2"});
  EXPECT_NE(e.find("3 levels"), std::string::npos) << e;
}

TEST(Deck, ZeroModulesRejected) {
  EXPECT_NE(error_of("", {"dipaco.modules_per_level=0"}).find("dipaco.modules_per_level"), std::string::npos);
}

TEST(Deck, HeadsMustDivideWidth) {
  EXPECT_NE(error_of("", {"model.d_model=100", "model.n_heads=3"}).find("must divide"), std::string::npos);
}

// Strings are written back into deck.ini and checkpoints: what the INI reader
// would cut (comments) or split (line breaks) is refused, so that every deck
// that loads loads again from its resolved text.
TEST(Deck, StringsThatWouldNotRoundTripAreRefused) {
  EXPECT_NE(error_of("", {"run.name=a#b"}).find("invalid value 'a#b' for run.name"), std::string::npos);
  EXPECT_NE(error_of("", {"data.corpus=x;y"}).find("data.corpus"), std::string::npos);
  EXPECT_NE(error_of("", {"run.name=a\nb"}).find("line breaks"), std::string::npos);
  Deck d = load_deck("", {"run.name=with spaces=and equals"});
  EXPECT_EQ(load_deck_text(d.text(), "resolved").values, d.values);
}

TEST(Deck, WindowsLineEndingsLoad) {
  Deck d = load_deck(write_deck("[train]\r\nsteps = 7\r\n[run]\r\nname = crlf\r\n"));
  EXPECT_EQ(d.train.steps, 7);
  EXPECT_EQ(d.run.name, "crlf");
}

TEST(Deck, TooManyPathsOrListItemsRefused) {
  EXPECT_NE(error_of("", {"model.n_layers=3", "model.layers_per_level=1,1,1", "dipaco.modules_per_level=4096,4096,4096"})
                .find("gives more than 1048576 paths"),
            std::string::npos);
  std::string many = "1";
  for (int i = 0; i < 2000; ++i) many += ",1";
  EXPECT_NE(error_of("", {"model.layers_per_level=" + many}).find("at most 1024 items"), std::string::npos);
}

// Integer keys are refused above what their field holds, not cut to it
// (2^32 + 20 steps used to train 20; 2^31 steps, -2^31).
TEST(Deck, IntegersBeyondTheFieldAreRefused) {
  for (std::string key : {"train.steps", "checkpoint.every", "eval.every", "run.log_every", "dipaco.inner_steps",
                          "route.warm_steps"})
    for (std::string v : {"2147483648", "4294967316"}) {
      std::string e = error_of("", {key + "=" + v});
      EXPECT_NE(e.find("invalid value '" + v + "' for " + key + ": expected an integer in ["), std::string::npos) << e;
      EXPECT_NE(e.find(", 2147483647]"), std::string::npos) << e;
    }
  EXPECT_EQ(load_deck("", {"train.steps=2147483647"}).train.steps, 2147483647);
  EXPECT_EQ(load_deck("", {"run.stop_after=1099511627776"}).run.stop_after, 1L << 40);  // a long field
}

// "--key=" sets a text key to the empty string (route.warm_start's default).
TEST(Deck, EmptyOverrideSetsEmptyText) {
  Deck d = load_deck(write_deck("[route]\nwarm_start = shared.h5\n"), {"--route.warm_start="});
  EXPECT_EQ(d.route.warm_start, "");
  EXPECT_EQ(load_deck("", {"route.warm_start=a.h5", "route.warm_start="}).route.warm_start, "");  // the last one wins
  EXPECT_NE(error_of("", {"--train.steps="}).find("invalid value '' for train.steps: expected an integer"), std::string::npos);
  EXPECT_NE(error_of("", {"--train.stpes="}).find("did you mean train.steps?"), std::string::npos);
}

TEST(Deck, DirectoryOrNonRegularFileIsNotADeck) {
  std::string e = error_of_file(::testing::TempDir());
  EXPECT_NE(e.find("is a directory"), std::string::npos) << e;
  e = error_of_file("/dev/null");
  EXPECT_NE(e.find("is not a regular file"), std::string::npos) << e;
}

// The run directory is <out_dir>/<name>: a name must be one path component.
TEST(Deck, RunNameIsOnePathComponent) {
  for (std::string v : {"../../escape", "/abs", ".", "..", "", "x/y", "x/"}) {
    std::string e = error_of("", {"--run.name=" + v});
    EXPECT_NE(e.find("invalid value '" + v + "' for run.name: expected one path component"), std::string::npos) << v << ": " << e;
  }
  EXPECT_NE(error_of("[run]\nname = a/b\n").find("for run.name"), std::string::npos);
  EXPECT_EQ(load_deck("", {"run.name=..x"}).run.name, "..x");
}

TEST(Deck, HelpListsEveryKeyWithDefault) {
  std::string h = deck_help();
  for (const auto& k : deck_keys()) {
    EXPECT_NE(h.find("--" + k.name + " "), std::string::npos) << k.name;
    EXPECT_NE(h.find("(default: " + k.deflt + ")"), std::string::npos) << k.name;
  }
}

TEST(Deck, PrivateLevelsNamedAndChecked) {
  EXPECT_TRUE(load_deck("", {}).dipaco.private_levels.empty());
  Deck d = load_deck("", {"dipaco.modules_per_level=2,2", "model.layers_per_level=2,2", "dipaco.private_levels=1, 0"});
  EXPECT_EQ(d.dipaco.private_levels, (std::vector<int>{0, 1}));
  for (const char* bad : {"dipaco.private_levels=2", "dipaco.private_levels=1,1", "dipaco.private_levels=x"}) {
    try {
      load_deck("", {"dipaco.modules_per_level=2,2", "model.layers_per_level=2,2", bad});
      ADD_FAILURE() << bad;
    } catch (const DeckError& e) {
      EXPECT_NE(std::string(e.what()).find("dipaco.private_levels"), std::string::npos) << e.what();
    }
  }
}

TEST(Topology, PrivateLevelHasAModulePerPath) {
  Topology t = make_topology({2, 2}, 4, {1});
  EXPECT_FALSE(t.is_private(0));
  EXPECT_TRUE(t.is_private(1));
  EXPECT_EQ(t.module_name(3, 0), "M1");
  EXPECT_EQ(t.module_name(3, 1), "P3");
  EXPECT_EQ(t.path_modules(3), (std::vector<int>{1, 1}));  // routing still uses both indices
}

TEST(Topology, ImpossibleRankCountListsThoseThatWork) {
  try {
    make_topology({2, 2}, 3);
    FAIL();
  } catch (const DeckError& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("1, 2, 4, 8"), std::string::npos) << m;
    EXPECT_NE(m.find("nearest that work: 2 and 4"), std::string::npos) << m;
  }
  try {  // 256 paths on 1000 ranks: the multiples of 256 either side
    make_topology({16, 16}, 1000);
    FAIL();
  } catch (const DeckError& e) {
    EXPECT_NE(std::string(e.what()).find("nearest that work: 768 and 1024"), std::string::npos) << e.what();
  }
}

TEST(Topology, PathsRanksAndModules) {
  Topology t = make_topology({2, 2}, 2);
  EXPECT_EQ(t.paths, 4);
  EXPECT_EQ(t.paths_per_rank, 2);
  EXPECT_EQ(t.path_modules(2), (std::vector<int>{1, 0}));
  EXPECT_EQ(t.paths_of_rank(1), (std::vector<int>{2, 3}));
  EXPECT_EQ(t.module_ranks(1, 0), (std::vector<int>{0, 1}));
  EXPECT_EQ(t.module_ranks(0, 1), (std::vector<int>{1}));
  Topology u = make_topology({2, 2}, 8);
  EXPECT_EQ(u.ranks_per_path, 2);
  EXPECT_EQ(u.ranks_of_path(3), (std::vector<int>{6, 7}));
  EXPECT_EQ(u.module_ranks(0, 1), (std::vector<int>{4, 5, 6, 7}));
}

}  // namespace

// The straggler of the benchmarks: none by default, one path, or one that moves every slow_moves steps.
TEST(Deck, StragglerStaysOrMoves) {
  EXPECT_EQ(straggler_at(load_deck(write_deck("")), 5, 4), -1);
  Deck stays = load_deck(write_deck("[fault]\nslow_path = 3\n"));
  EXPECT_EQ(straggler_at(stays, 0, 4), 3);
  EXPECT_EQ(straggler_at(stays, 999, 4), 3);
  Deck moves = load_deck(write_deck("[fault]\nslow_path = 2\nslow_moves = 10\n"));
  EXPECT_EQ(straggler_at(moves, 9, 4), 2);
  EXPECT_EQ(straggler_at(moves, 10, 4), 3);
  EXPECT_EQ(straggler_at(moves, 25, 4), 0);
  Deck off = load_deck(write_deck("[fault]\nslow_path = 1\nslow_factor = 1\n"));
  EXPECT_EQ(straggler_at(off, 0, 4), -1);
}

TEST(Deck, OverlapNeedsARingAndFitsInARound) {
  EXPECT_NE(error_of("", {"dipaco.inner_steps=10", "dipaco.overlap_steps=3"}).find("needs dipaco.outer_dtype = bf16, int8 or fp4"),
            std::string::npos);
  EXPECT_NE(error_of("", {"dipaco.inner_steps=10", "dipaco.overlap_steps=10", "dipaco.outer_dtype=int8"})
                .find("dipaco.overlap_steps = 10 must be below dipaco.inner_steps = 10"),
            std::string::npos);
  EXPECT_EQ(error_of("", {"dipaco.inner_steps=10", "dipaco.overlap_steps=9", "dipaco.outer_dtype=fp4"}), "");
  EXPECT_NE(error_of("", {"dipaco.outer_dtype=fp8"}).find("fp32|bf16|int8|fp4"), std::string::npos);
}

// One splitter for overrides: the command line's (split_deck_args) and the deck's.
TEST(Deck, OverridesSplitOneWay) {
  const Override a = split_override("--train.steps=9");
  EXPECT_EQ(a.key, "train.steps");
  EXPECT_EQ(a.value, "9");
  EXPECT_TRUE(a.has_value);
  const Override b = split_override("route.warm_start=");
  EXPECT_EQ(b.key, "route.warm_start");
  EXPECT_TRUE(b.has_value && b.value.empty());
  const Override c = split_override("--train.lr");
  EXPECT_EQ(c.key, "train.lr");
  EXPECT_FALSE(c.has_value);
  EXPECT_EQ(split_override("--data.corpus=a=b.jsonl").value, "a=b.jsonl");  // the first '=' splits
  EXPECT_EQ(split_override("--ranks=4").key, "ranks");                        // no '.': a command's flag

  std::string deck;
  Args ov, extra;
  split_deck_args({"d.ini", "--train.steps", "9", "--model.d_model=64", "--ranks", "4"}, deck, ov, &extra);
  EXPECT_EQ(deck, "d.ini");
  EXPECT_EQ(ov, (Args{"--train.steps=9", "--model.d_model=64"}));
  EXPECT_EQ(extra, (Args{"--ranks", "4"}));
  const Deck d = load_deck("", ov);
  EXPECT_EQ(d.train.steps, 9);
  EXPECT_EQ(d.model.d_model, 64);
}

// A rule that spans keys lives in the deck's own check, so `dipaco deck`
// refuses what `dipaco run` would, before anything starts.
TEST(Deck, CrossKeyRulesAreTheDecks) {
  EXPECT_NE(error_of("", {"dipaco.replica_mode=diloco", "dipaco.inner_steps=0"}).find("needs dipaco.inner_steps > 0"),
            std::string::npos);
  EXPECT_NE(error_of("", {"route.em_rounds=1", "route.method=hash"}).find("route.em_rounds needs route.method = kmeans"),
            std::string::npos);
  EXPECT_EQ(error_of("", {"route.em_rounds=1", "route.method=kmeans"}), "");
  EXPECT_NE(error_of("", {"eval.reroute_window=64", "eval.reroute_router=starts"}).find(
                "eval.reroute_window = 64 needs eval.reroute_router = windows"), std::string::npos);
  EXPECT_NE(error_of("", {"eval.reroute_window=4096", "model.context=128"}).find("must be at most model.context = 128"),
            std::string::npos);
  EXPECT_EQ(error_of("", {"eval.reroute_window=64", "model.context=128"}), "");
  EXPECT_NE(error_of("", {"route.segment_tokens=64", "route.method=hash"}).find("route.segment_tokens needs route.method = kmeans"),
            std::string::npos);
  EXPECT_NE(error_of("", {"route.segment_tokens=64", "route.method=kmeans", "route.em_rounds=1"})
                .find("route.segment_tokens and route.em_rounds cannot be combined"),
            std::string::npos);
  EXPECT_NE(error_of("", {"route.segment_window=64"}).find("route.segment_window = 64 needs route.segment_tokens > 0"),
            std::string::npos);
  EXPECT_NE(error_of("", {"route.segment_tokens=64", "route.segment_window=256", "route.method=kmeans", "model.context=128"})
                .find("route.segment_window = 256 must be at most model.context = 128"),
            std::string::npos);
  EXPECT_EQ(error_of("", {"route.segment_tokens=64", "route.segment_window=64", "route.method=kmeans"}), "");
  EXPECT_NE(error_of("", {"route.segment_margin=0.5"}).find("route.segment_margin = 0.5 needs route.segment_tokens > 0"),
            std::string::npos);
  EXPECT_NE(error_of("", {"route.segment_tokens=64", "route.method=kmeans", "route.segment_margin=0.5", "route.overlap=2"})
                .find("route.segment_margin = 0.5 needs route.overlap = 1"),
            std::string::npos);
  EXPECT_EQ(error_of("", {"route.segment_tokens=64", "route.method=kmeans", "route.segment_margin=0.5"}), "");
  EXPECT_NE(error_of("", {"eval.reroute_margin=0.5", "eval.reroute_router=starts"}).find("needs eval.reroute_router = windows"),
            std::string::npos);
  // A shard floor above an even share, or above the cap, cannot be met.
  const std::vector<std::string> four = {"dipaco.modules_per_level=2,2", "model.layers_per_level=2,2"};
  auto with = [&](std::vector<std::string> ov) { return ov.insert(ov.end(), four.begin(), four.end()), ov; };
  EXPECT_NE(error_of("", with({"route.min_shard_fraction=0.3"})).find("must be at most 1/paths = 1/4"), std::string::npos);
  EXPECT_NE(error_of("", with({"route.min_shard_fraction=0.2", "route.max_shard_fraction=0.1"})).find("route.max_shard_fraction = 0.1"),
            std::string::npos);
  EXPECT_EQ(error_of("", with({"route.min_shard_fraction=0.25", "route.max_shard_fraction=0.4"})), "");
}

// A variant deck is made through overrides: what it records is what it runs,
// and the deck it came from is untouched.
TEST(Deck, VariantRecordsWhatItRuns) {
  const Deck d = load_deck("", {"dipaco.modules_per_level=2,2", "model.layers_per_level=2,2", "train.steps=30"});
  const Deck v = with_overrides(d, {"dipaco.modules_per_level=1,1", "train.steps=7"});
  EXPECT_EQ(v.dipaco.modules_per_level, (std::vector<int>{1, 1}));
  EXPECT_EQ(v.train.steps, 7);
  EXPECT_NE(v.text().find("modules_per_level = 1,1"), std::string::npos);
  EXPECT_NE(v.text().find("[train]\nsteps = 7"), std::string::npos);
  EXPECT_EQ(load_deck_text(v.text(), "v").text(), v.text());
  EXPECT_EQ(d.train.steps, 30);
  EXPECT_EQ(v.model.layers_per_level, d.model.layers_per_level);
  EXPECT_THROW(with_overrides(d, {"dipaco.inner_steps=10", "dipaco.overlap_steps=10", "dipaco.outer_dtype=int8"}), DeckError);
}

// Each key's stage and whether it shapes a checkpoint are facts of its registry
// entry: the stamps, checkpoint compatibility and --help read them there.
TEST(Deck, RegistryHoldsStageAndShape) {
  EXPECT_EQ(deck_key("data.corpus").stage, DeckStage::prepare);
  EXPECT_EQ(deck_key("train.lr").stage, DeckStage::warm_start);  // the warm start trains with it
  EXPECT_EQ(deck_key("route.fit_docs").stage, DeckStage::route);
  EXPECT_EQ(deck_key("dipaco.outer_lr").stage, DeckStage::train);
  EXPECT_EQ(deck_key("eval.doc_bytes").stage, DeckStage::evaluate);
  EXPECT_EQ(deck_key("run.log_every").stage, DeckStage::none);
  EXPECT_EQ(deck_key("train.diverge_factor").stage, DeckStage::none);  // what a run does when it diverges
  EXPECT_TRUE(deck_key("model.d_model").shape);
  EXPECT_TRUE(deck_key("dipaco.private_levels").shape);
  EXPECT_FALSE(deck_key("train.lr").shape);
  for (const auto& k : deck_keys())
    if (k.shape) EXPECT_NE(k.stage, DeckStage::none) << k.name;
  EXPECT_THROW(deck_key("train.no_such_key"), DeckError);
  const Deck d = load_deck("", {"model.d_model=64"});
  EXPECT_EQ(incompatible_keys(load_deck("").text(), d).size(), 1u);
  EXPECT_NE(deck_help().find("--model.d_model <int>"), std::string::npos);
  EXPECT_NE(deck_help().find("[from stage warm start; a checkpoint's shape]"), std::string::npos);
}

// A stamp kept with a stage's output holds against today's when they differ
// only by deck keys added since, at their defaults (an upgrade redoes nothing).
TEST(Deck, StampKeptHoldsAgainstKeysAddedAtTheirDefaults) {
  const std::string kept = "model.d_model = 32\ncorpus.content_hash = 7\n";
  EXPECT_TRUE(same_stamp(kept, kept));
  EXPECT_TRUE(same_stamp(kept, "model.d_model = 32\nroute.segment_tokens = 0\ncorpus.content_hash = 7\n"));
  EXPECT_FALSE(same_stamp(kept, "model.d_model = 32\nroute.segment_tokens = 64\ncorpus.content_hash = 7\n"))
      << "a new key set away from its default";
  EXPECT_FALSE(same_stamp(kept, "model.d_model = 64\ncorpus.content_hash = 7\n")) << "a key changed";
  EXPECT_FALSE(same_stamp(kept, "model.d_model = 32\n")) << "a line dropped";
  EXPECT_FALSE(same_stamp(kept, kept + "segment_cut = 2\n")) << "a line that is no deck key";
  EXPECT_FALSE(same_stamp("", "model.d_model = 32\n")) << "nothing kept";
  EXPECT_FALSE(same_stamp("stamp A\n", "stamp B\n")) << "lines that are not keys compare whole";
}
