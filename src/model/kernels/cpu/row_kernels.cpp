#include "row_kernels.hpp"

#include "dipaco/model/bf16.hpp"
#include "fast_exp.hpp"

#include <algorithm>
#include <cmath>

// The clones: AVX-512, AVX2 + FMA, and the portable baseline the build targets;
// the loader picks one per CPU.
#define DIPACO_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))

namespace dipaco::rows {
namespace {

constexpr float kGeluC = 0.7978845608028654f;  // sqrt(2/pi)

// tanh(u) = 1 - 2 / (exp(2u) + 1)
inline float fast_tanh(float u) { return 1.0f - 2.0f / (fast_exp(2.0f * u) + 1.0f); }

}  // namespace

DIPACO_CLONES
void layernorm_forward(float* out, float* mean, float* rstd, const float* x, const float* w, const float* b, int C) {
  float m = 0;
#pragma omp simd reduction(+ : m)
  for (int c = 0; c < C; ++c) m += x[c];
  m /= C;
  float v = 0;
#pragma omp simd reduction(+ : v)
  for (int c = 0; c < C; ++c) v += (x[c] - m) * (x[c] - m);
  float r = 1.0f / std::sqrt(v / C + 1e-5f);
#pragma omp simd
  for (int c = 0; c < C; ++c) out[c] = (x[c] - m) * r * w[c] + b[c];
  *mean = m;
  *rstd = r;
}

DIPACO_CLONES
void layernorm_backward(float* dx, float* pw, float* pb, const float* dout, const float* x, const float* w, float m,
                        float r, int C) {
  float dnorm_mean = 0, dnorm_norm_mean = 0;
#pragma omp simd reduction(+ : dnorm_mean, dnorm_norm_mean)
  for (int c = 0; c < C; ++c) {
    float norm = (x[c] - m) * r, dnorm = w[c] * dout[c];
    dnorm_mean += dnorm;
    dnorm_norm_mean += dnorm * norm;
    pw[c] += norm * dout[c];
    pb[c] += dout[c];
  }
  dnorm_mean /= C;
  dnorm_norm_mean /= C;
#pragma omp simd
  for (int c = 0; c < C; ++c) {
    float norm = (x[c] - m) * r;
    dx[c] += (w[c] * dout[c] - dnorm_mean - norm * dnorm_norm_mean) * r;
  }
}

DIPACO_CLONES
void gelu_forward(float* out, const float* x, size_t n) {
#pragma omp simd
  for (size_t i = 0; i < n; ++i) {
    float v = x[i];
    out[i] = 0.5f * v * (1.0f + fast_tanh(kGeluC * (v + 0.044715f * v * v * v)));
  }
}

DIPACO_CLONES
void gelu_backward(float* dx, const float* x, const float* dout, size_t n) {
#pragma omp simd
  for (size_t i = 0; i < n; ++i) {
    float v = x[i];
    float t = fast_tanh(kGeluC * (v + 0.044715f * v * v * v));
    float sech2 = 1.0f - t * t;
    dx[i] = dout[i] * (0.5f * (1.0f + t) + 0.5f * v * sech2 * kGeluC * (1.0f + 3.0f * 0.044715f * v * v));
  }
}

DIPACO_CLONES
void causal_softmax_forward(float* a, const float* s, int len, int T, float scale) {
  float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
  for (int j = 0; j < len; ++j) mx = std::max(mx, s[j] * scale);
  float sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int j = 0; j < len; ++j) {
    a[j] = fast_exp(s[j] * scale - mx);
    sum += a[j];
  }
  float inv = 1.0f / sum;
#pragma omp simd
  for (int j = 0; j < len; ++j) a[j] *= inv;
  std::fill(a + len, a + T, 0.0f);
}

DIPACO_CLONES
void causal_softmax_backward(float* ds, const float* d, const float* a, int len, int T, float scale) {
  float dot = 0;
#pragma omp simd reduction(+ : dot)
  for (int j = 0; j < len; ++j) dot += a[j] * d[j];
#pragma omp simd
  for (int j = 0; j < len; ++j) ds[j] = scale * a[j] * (d[j] - dot);
  std::fill(ds + len, ds + T, 0.0f);
}

DIPACO_CLONES
float softmax_crossentropy(float* p, int target, int V) {
  float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
  for (int j = 0; j < V; ++j) mx = std::max(mx, p[j]);
  float sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int j = 0; j < V; ++j) {
    p[j] = fast_exp(p[j] - mx);
    sum += p[j];
  }
  float inv = 1.0f / sum;
#pragma omp simd
  for (int j = 0; j < V; ++j) p[j] *= inv;
  return -std::log(std::max(p[target], 1e-30f));
}

DIPACO_CLONES
void column_sums(float* acc, const float* x, int M, size_t stride, int w) {
  for (int i = 0; i < M; ++i) {
    const float* r = x + size_t(i) * stride;
#pragma omp simd
    for (int j = 0; j < w; ++j) acc[j] += r[j];
  }
}

DIPACO_CLONES
void add_into(float* acc, const float* x, int n) {
#pragma omp simd
  for (int j = 0; j < n; ++j) acc[j] += x[j];
}

DIPACO_CLONES
void adamw(float* p, const float* g, float* m, float* v, size_t n, float lr, float b1, float b2, float eps, float wd,
           float c1, float c2) {
#pragma omp simd
  for (size_t i = 0; i < n; ++i) {
    m[i] = b1 * m[i] + (1 - b1) * g[i];
    v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
    p[i] -= lr * ((m[i] * c1) / (std::sqrt(v[i] * c2) + eps) + wd * p[i]);
  }
}

DIPACO_CLONES
void to_bf16(uint16_t* out, const float* in, size_t n) {
#pragma omp simd
  for (size_t i = 0; i < n; ++i) out[i] = dipaco::to_bf16(in[i]);
}

DIPACO_CLONES
void round_bf16(float* out, const float* in, size_t n) {
#pragma omp simd
  for (size_t i = 0; i < n; ++i) out[i] = from_bf16(dipaco::to_bf16(in[i]));
}

}  // namespace dipaco::rows
