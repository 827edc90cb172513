#include "dipaco/train/metrics.hpp"

#include <cerrno>
#include <cmath>

#include "dipaco/io/files.hpp"

namespace dipaco {

namespace {

// Length of the valid UTF-8 sequence at s[i] (0: none: a stray or overlong
// byte, a surrogate, past U+10FFFF, or cut short).
size_t utf8_length(const std::string& s, size_t i) {
  const unsigned char c = s[i];
  const size_t n = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 ? 2 : 0;
  if (c > 0xF4 || n == 0 || i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k)
    if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return 0;
  const unsigned char d = s[i + 1];
  if ((c == 0xE0 && d < 0xA0) || (c == 0xED && d >= 0xA0) || (c == 0xF0 && d < 0x90) || (c == 0xF4 && d >= 0x90))
    return 0;
  return n;
}

}  // namespace

// Valid UTF-8 passes through; any other byte >= 0x80 (generated text is bytes,
// not always UTF-8) becomes \u00XX, so that the output is always valid JSON.
std::string json_escape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    const unsigned char c = s[i];
    if (c >= 0x80) {
      if (const size_t n = utf8_length(s, i)) {
        out.append(s, i, n);
        i += n - 1;
      } else {
        char buf[8];
        std::snprintf(buf, sizeof buf, "\\u%04x", c);
        out += buf;
      }
      continue;
    }
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += char(c);
        }
    }
  }
  return out;
}

static std::string num(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

std::string json_array(const std::vector<double>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + num(v[i]);
  return s + "]";
}

void JsonRecord::key(const std::string& k) {
  if (!body_.empty()) body_ += ",";
  body_ += "\"" + json_escape(k) + "\":";
}
JsonRecord& JsonRecord::add(const std::string& k, double v) {
  key(k);
  body_ += num(v);
  return *this;
}
JsonRecord& JsonRecord::add(const std::string& k, long v) {
  key(k);
  body_ += std::to_string(v);
  return *this;
}
JsonRecord& JsonRecord::add(const std::string& k, const std::string& v) {
  key(k);
  body_ += "\"" + json_escape(v) + "\"";
  return *this;
}
JsonRecord& JsonRecord::add_raw(const std::string& k, const std::string& json) {
  key(k);
  body_ += json;
  return *this;
}

MetricsFile::MetricsFile(const std::string& path, bool append) : path_(path) {
  errno = 0;
  f_ = std::fopen(path.c_str(), append ? "a" : "w");
  if (!f_) throw WriteError(write_failure("metrics file " + path, errno));
}
MetricsFile::~MetricsFile() {
  if (f_) std::fclose(f_);
}
void MetricsFile::write(const JsonRecord& r) {
  if (!f_) return;
  // Flushed per record and checked: a full disk stops the run here, not
  // thousands of steps later with a truncated file.
  errno = 0;
  if (std::fputs((r.str() + "\n").c_str(), f_) < 0 || std::fflush(f_) != 0)
    throw WriteError(write_failure("metrics file " + path_, errno ? errno : EIO));
}

std::string format_duration(double s) {
  if (!std::isfinite(s) || s < 0 || s > 1e12) return "?";  // also keeps long(s) defined
  char buf[32];
  long t = long(s + 0.5);
  if (t >= 3600) std::snprintf(buf, sizeof buf, "%ldh%02ldm", t / 3600, (t % 3600) / 60);
  else if (t >= 60) std::snprintf(buf, sizeof buf, "%ldm%02lds", t / 60, t % 60);
  else std::snprintf(buf, sizeof buf, "%lds", t);
  return buf;
}

}  // namespace dipaco
