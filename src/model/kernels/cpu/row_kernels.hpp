// The CPU kernels' inner loops over one row (or one chunk of a flat array).
// Each is compiled twice, for AVX2+FMA (x86-64-v3) and for the portable
// baseline, and the loader picks the clone the CPU runs (GCC target_clones),
// so a portable build still trains at vector speed. Row sums use OpenMP simd
// reductions: a fixed lane order, so results are bitwise reproducible on one
// CPU type and thread count (never -ffast-math).
#pragma once
#include <cstddef>
#include <cstdint>

namespace dipaco::rows {

// out = (x - mean) * rstd * w + b over C channels; writes mean and rstd.
void layernorm_forward(float* out, float* mean, float* rstd, const float* x, const float* w, const float* b, int C);
// dx += ...; pw += norm * dout, pb += dout (this thread's weight/bias partial sums).
void layernorm_backward(float* dx, float* pw, float* pb, const float* dout, const float* x, const float* w, float mean,
                        float rstd, int C);

void gelu_forward(float* out, const float* x, size_t n);
void gelu_backward(float* dx, const float* x, const float* dout, size_t n);

// One score row of causal attention: a[0..len) = softmax(scale * s[0..len)), a[len..T) = 0.
void causal_softmax_forward(float* a, const float* s, int len, int T, float scale);
// ds[0..len) = scale * a * (d - dot(a, d)), ds[len..T) = 0.
void causal_softmax_backward(float* ds, const float* d, const float* a, int len, int T, float scale);

// Logits row -> probabilities in place; returns -log p[target].
float softmax_crossentropy(float* p, int target, int V);

// acc[0..w) += column sums of w columns over M rows, stride apart (x points at the first column).
void column_sums(float* acc, const float* x, int M, size_t stride, int w);
// acc[j] += x[j]
void add_into(float* acc, const float* x, int n);

// out[i] = bf16(in[i]) (round to nearest even), as bits or as the fp32 value it carries.
void to_bf16(uint16_t* out, const float* in, size_t n);
void round_bf16(float* out, const float* in, size_t n);

void adamw(float* p, const float* g, float* m, float* v, size_t n, float lr, float b1, float b2, float eps, float wd,
           float c1, float c2);

}  // namespace dipaco::rows
