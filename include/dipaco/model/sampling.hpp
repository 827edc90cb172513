// Choosing the next byte from the model's probabilities: temperature (0: the
// likeliest byte), then top-k and top-p (nucleus) truncation. Byte 0 ends a
// document in the training data and is never chosen mid-text.
#pragma once
#include <random>
#include <vector>

namespace dipaco {

struct Sampling {
  double temperature = 0.8;  // 0: greedy
  int top_k = 0;             // 0: all bytes
  double top_p = 1.0;        // 1: no nucleus cut
};

// The likeliest byte other than 0 (the lowest on ties).
int greedy_byte(const std::vector<float>& probs);
// Deterministic for the generator's state.
int sample_byte(const std::vector<float>& probs, const Sampling& s, std::mt19937_64& rng);

}  // namespace dipaco
