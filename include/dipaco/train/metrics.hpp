// Metrics: one JSON object per line (metrics.jsonl in the run directory),
// plus the human progress line with rate and ETA.
#pragma once
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

namespace dipaco {

// A flat JSON object built field by field.
class JsonRecord {
 public:
  JsonRecord& add(const std::string& key, double v);
  JsonRecord& add(const std::string& key, long v);
  JsonRecord& add(const std::string& key, int v) { return add(key, long(v)); }
  JsonRecord& add(const std::string& key, const std::string& v);
  JsonRecord& add(const std::string& key, const char* v) { return add(key, std::string(v)); }
  JsonRecord& add_raw(const std::string& key, const std::string& json);
  std::string str() const { return "{" + body_ + "}"; }

 private:
  void key(const std::string& k);
  std::string body_;
};

std::string json_escape(const std::string& s);
std::string json_array(const std::vector<double>& v);

class MetricsFile {
 public:
  MetricsFile() = default;
  // Both throw WriteError when the file cannot be written.
  explicit MetricsFile(const std::string& path, bool append);
  ~MetricsFile();
  MetricsFile(const MetricsFile&) = delete;
  MetricsFile& operator=(const MetricsFile&) = delete;
  void write(const JsonRecord& r);

 private:
  FILE* f_ = nullptr;
  std::string path_;
};

// "1h02m", "3m05s", "12s"
std::string format_duration(double seconds);

}  // namespace dipaco
