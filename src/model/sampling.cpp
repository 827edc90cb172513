#include "dipaco/model/sampling.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace dipaco {

int greedy_byte(const std::vector<float>& probs) {
  int best = 1;
  for (int v = 2; v < int(probs.size()); ++v)
    if (probs[v] > probs[best]) best = v;
  return best;
}

int sample_byte(const std::vector<float>& probs, const Sampling& s, std::mt19937_64& rng) {
  const int V = int(probs.size());
  if (s.temperature <= 0) return greedy_byte(probs);
  // Scaling works on log-probabilities less their maximum, so the likeliest
  // byte keeps weight 1 at any temperature (powers of probabilities underflow
  // to all zeros at a low one).
  const double top = std::log(std::max(double(probs[greedy_byte(probs)]), 1e-30));
  std::vector<double> w(V, 0.0);
  for (int v = 1; v < V; ++v) w[v] = std::exp((std::log(std::max(double(probs[v]), 1e-30)) - top) / s.temperature);
  std::vector<int> order(V - 1);
  std::iota(order.begin(), order.end(), 1);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return w[a] > w[b]; });
  size_t keep = order.size();
  if (s.top_k > 0) keep = std::min(keep, size_t(s.top_k));
  if (s.top_p < 1.0) {
    // The smallest set of likeliest bytes whose mass reaches top_p (at least one).
    const double total = std::accumulate(w.begin(), w.end(), 0.0);
    double mass = 0;
    size_t n = 0;
    while (n < keep && (n == 0 || mass < s.top_p * total)) mass += w[order[n++]];
    keep = n;
  }
  for (size_t i = keep; i < order.size(); ++i) w[order[i]] = 0;
  return std::discrete_distribution<int>(w.begin(), w.end())(rng);
}

}  // namespace dipaco
