// json_escape: generated text is bytes, not always UTF-8; valid UTF-8 passes
// through, every other byte >= 0x80 becomes \u00XX, so the JSON stays valid.
#include <gtest/gtest.h>

#include "dipaco/train/metrics.hpp"

using namespace dipaco;

TEST(JsonEscape, ValidUtf8PassesOtherHighBytesEscaped) {
  EXPECT_EQ(json_escape("a\"b\\\n\x01"), "a\\\"b\\\\\\n\\u0001");
  EXPECT_EQ(json_escape("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"), "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
  EXPECT_EQ(json_escape("\xff\xfe"), "\\u00ff\\u00fe");
  EXPECT_EQ(json_escape("\xc3"), "\\u00c3");                     // cut short
  EXPECT_EQ(json_escape("\xc3\x28"), "\\u00c3(");                // no continuation byte
  EXPECT_EQ(json_escape("\xc0\xaf"), "\\u00c0\\u00af");          // overlong
  EXPECT_EQ(json_escape("\xed\xa0\x80"), "\\u00ed\\u00a0\\u0080");  // a surrogate
  EXPECT_EQ(json_escape("\xf4\x90\x80\x80"), "\\u00f4\\u0090\\u0080\\u0080");  // past U+10FFFF
}
