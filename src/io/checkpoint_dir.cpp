// The checkpoint directory: what exists in it, rotation, moving a finished
// lineage aside, and the size a checkpoint will take.
#include <algorithm>
#include <filesystem>
#include <fstream>

#include "dipaco/io/checkpoint.hpp"
#include "dipaco/train/trainer.hpp"

namespace fs = std::filesystem;

namespace dipaco {

std::vector<std::string> resume_order(const std::string& dir) {
  std::vector<std::string> order = list_checkpoints(dir);
  std::string latest;
  std::ifstream(dir + "/latest") >> latest;
  const auto it = latest.empty() ? order.end() : std::find(order.begin(), order.end(), dir + "/" + latest);
  if (it != order.end()) std::rotate(order.begin(), it, it + 1);
  return order;
}

std::string checkpoint_status(const std::string& dir) {
  const auto order = resume_order(dir);
  return order.empty() ? "no checkpoint exists yet" : "the previous checkpoint " + order[0] + " is intact";
}

void rotate_checkpoints(const std::string& dir, const std::string& written, int keep) {
  // By write order, not step number: a run that started below older,
  // higher-numbered checkpoints must not delete the one it just wrote.
  std::vector<std::pair<fs::file_time_type, std::string>> others;
  std::error_code ec;
  for (const auto& f : list_checkpoints(dir))  // newest step first: ties keep that order
    if (f != written) others.push_back({fs::last_write_time(f, ec), f});
  std::stable_sort(others.begin(), others.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  for (size_t i = std::max(keep, 1) - 1; i < others.size(); ++i) fs::remove(others[i].second, ec);
}

std::string move_checkpoints_aside(const std::string& dir) {
  const std::string aside = dir + ".stale";
  std::error_code ec;
  if (!fs::exists(dir, ec) || fs::is_empty(dir, ec)) return "";
  fs::remove_all(aside);
  fs::rename(dir, aside);
  fs::create_directories(dir);
  return aside;
}

double checkpoint_bytes(Trainer& t, const std::vector<int>& stored) {
  const ParamLayout& layout = t.layout();
  // The float datasets: every path's arena twice (adam_m, adam_v; three times with outer_error) and its
  // stored params groups for each stored replica, every sync unit's anchor and momentum.
  const int paths = t.topology().paths;
  const int replicas = t.deck().dipaco.replica_mode == ReplicaMode::diloco ? t.topology().ranks_per_path : 1;
  double columns = (OuterOptimizer::error_feedback(t.deck()) ? 3.0 : 2.0) * double(layout.total);  // + outer_error
  for (int g : stored) columns += double(layout.groups[g].size);
  double data = 4 * columns * paths * replicas, meta = 0;
  for (auto& u : t.outer().units()) {
    data += 2.0 * 4 * double(layout.groups[u.group].size);
    for (const auto& v : layout.groups[u.group].views) meta += 2.0 * v.name.size() + 32;  // index attributes
  }
  // The rest of the metadata, measured on real files (11 to 16 KB for the
  // quickstart and 2x2 decks): the deck text, object headers of each group
  // and dataset, the evaluation history; rounded up.
  meta += double(t.deck().text().size()) + (16 << 10) + 2048.0 * (paths * replicas + t.outer().units().size());
  meta += 8.0 * double(t.progress().eval_step.size()) * (2 + paths);
  return data + meta;
}

}  // namespace dipaco
