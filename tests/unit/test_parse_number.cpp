// The one parser of typed numbers (deck values, command-line flags): the whole
// text, in range, or nothing; and each caller's message for a refusal.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "dipaco/cmd/options.hpp"
#include "dipaco/io/deck.hpp"
#include "dipaco/io/parse_number.hpp"

using namespace dipaco;

TEST(ParseNumber, IntegerWholeTextInRange) {
  EXPECT_EQ(parse_integer("42", 0, 100), 42);
  EXPECT_EQ(parse_integer("-3", -5, 5), -3);
  EXPECT_EQ(parse_integer("0", 0, 0), 0);
  EXPECT_EQ(parse_integer("9223372036854775807", 0, std::numeric_limits<long long>::max()),
            std::numeric_limits<long long>::max());
  for (const char* bad : {"", "x", "12x", "1.5", "1e3", "0x10 ", "99999999999999999999"})
    EXPECT_FALSE(parse_integer(bad, std::numeric_limits<long long>::min(), std::numeric_limits<long long>::max())) << bad;
  EXPECT_FALSE(parse_integer("101", 0, 100));
  EXPECT_FALSE(parse_integer("-1", 0, 100));
}

TEST(ParseNumber, RealWholeTextFiniteInRange) {
  EXPECT_DOUBLE_EQ(*parse_real("0.5", 0, 1), 0.5);
  EXPECT_DOUBLE_EQ(*parse_real("1e-3", 0, 1), 1e-3);
  EXPECT_DOUBLE_EQ(*parse_real("7", 0, 10), 7);
  for (const char* bad : {"", "x", "0.5x", "nan", "inf", "-inf", "1e999"})
    EXPECT_FALSE(parse_real(bad, -HUGE_VAL, HUGE_VAL)) << bad;
  EXPECT_FALSE(parse_real("1.5", 0, 1));
  EXPECT_FALSE(parse_real("-0.1", 0, 1));
}

// The deck names the key and what it expects; a flag names itself.
TEST(ParseNumber, EachCallerWordsItsRefusal) {
  try {
    load_deck("", {"train.steps=12x"});
    FAIL() << "12x was read as a number of steps";
  } catch (const DeckError& e) {
    EXPECT_NE(std::string(e.what()).find("invalid value '12x' for train.steps: expected an integer in [0, "), std::string::npos)
        << e.what();
  }
  try {
    load_deck("", {"train.lr=nan"});
    FAIL() << "nan was read as a learning rate";
  } catch (const DeckError& e) {
    EXPECT_NE(std::string(e.what()).find("invalid value 'nan' for train.lr: expected a number in ["), std::string::npos)
        << e.what();
  }
  try {
    int_option("--tokens", "12x", 1, 100);
    FAIL();
  } catch (const UsageError& e) {
    EXPECT_STREQ(e.what(), "--tokens needs an integer in [1, 100], got '12x'");
  }
  try {
    number_option("--top-p", "2", 1e-9, 1, "(0, 1]");
    FAIL();
  } catch (const UsageError& e) {
    EXPECT_STREQ(e.what(), "--top-p needs a number in (0, 1], got '2'");
  }
  EXPECT_EQ(int_option("--tokens", "64", 1, 100), 64);
  EXPECT_DOUBLE_EQ(number_option("--top-p", "0.9", 1e-9, 1, "(0, 1]"), 0.9);
}
