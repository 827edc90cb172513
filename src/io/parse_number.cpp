#include "dipaco/io/parse_number.hpp"

#include <cmath>
#include <exception>

namespace dipaco {

std::optional<long long> parse_integer(const std::string& text, long long lo, long long hi) {
  size_t pos = 0;
  long long x = 0;
  try {
    x = std::stoll(text, &pos);
  } catch (const std::exception&) {  // no digits, or out of long long's range
    return std::nullopt;
  }
  if (pos != text.size() || x < lo || x > hi) return std::nullopt;
  return x;
}

std::optional<double> parse_real(const std::string& text, double lo, double hi) {
  size_t pos = 0;
  double x = 0;
  try {
    x = std::stod(text, &pos);
  } catch (const std::exception&) {
    return std::nullopt;
  }
  if (pos != text.size() || !std::isfinite(x) || x < lo || x > hi) return std::nullopt;
  return x;
}

}  // namespace dipaco
