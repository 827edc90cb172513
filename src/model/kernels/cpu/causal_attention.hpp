// Fused causal self-attention on the CPU: each thread takes whole (sequence,
// head) pairs and computes scores, softmax and the value product in its cache
// with register-tiled loops, only over the causal triangle; the backward
// recomputes the probabilities rather than reading them back. A matmul call per
// head would cost more in call overhead than in arithmetic at the paths' sizes
// (T = 128, 32-wide heads). Computed in fp32 whatever the model's precision.
// Each head is one thread's from start to end: results are bitwise the same
// at any thread count.
#pragma once

namespace dipaco::causal_attention {

// qkv [B*T, 3C] (heads of D at h*D in each third), out [B*T, C] overwritten.
// stats [B, H, T, 2]: each score row's max and 1/sum, all the backward needs to
// recompute the probabilities (the B*H*T*T of them never go through memory).
void forward(float* out, float* stats, const float* qkv, int B, int T, int H, int D, float scale);
// dqkv [B*T, 3C] overwritten from dout [B*T, C] and the forward's stats.
void backward(float* dqkv, const float* dout, const float* qkv, const float* stats, int B, int T, int H, int D,
              float scale);

}  // namespace dipaco::causal_attention
