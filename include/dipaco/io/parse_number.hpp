// Numbers typed by users (deck values, command-line flags): the whole text is
// one number or it is refused, so "12x" or "1e3" for an integer is never read
// as a prefix. Callers word the refusal: each names its key or flag.
#pragma once
#include <optional>
#include <string>

namespace dipaco {

// An integer in [lo, hi] (std::stoll's syntax), or nothing.
std::optional<long long> parse_integer(const std::string& text, long long lo, long long hi);
// A finite number in [lo, hi] (std::stod's syntax), or nothing.
std::optional<double> parse_real(const std::string& text, double lo, double hi);

}  // namespace dipaco
