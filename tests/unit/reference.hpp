// Double-precision reference implementations, written as plainly as possible:
// the ground truth for kernel outputs and (through central finite
// differences) for every backward pass and the whole model's gradient.
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

#include "dipaco/model/model.hpp"

namespace ref {
using Vec = std::vector<double>;

inline Vec layernorm(const Vec& x, const Vec& w, const Vec& b, int N, int C) {
  Vec out(x.size());
  for (int n = 0; n < N; ++n) {
    double m = 0, v = 0;
    for (int c = 0; c < C; ++c) m += x[n * C + c];
    m /= C;
    for (int c = 0; c < C; ++c) v += (x[n * C + c] - m) * (x[n * C + c] - m);
    double r = 1.0 / std::sqrt(v / C + 1e-5);
    for (int c = 0; c < C; ++c) out[n * C + c] = (x[n * C + c] - m) * r * w[c] + b[c];
  }
  return out;
}

inline Vec gelu(const Vec& x) {
  Vec out(x.size());
  for (size_t i = 0; i < x.size(); ++i)
    out[i] = 0.5 * x[i] * (1 + std::tanh(std::sqrt(2 / M_PI) * (x[i] + 0.044715 * x[i] * x[i] * x[i])));
  return out;
}

// out[N,O] = x[N,I] W[I,O] + b
inline Vec linear(const Vec& x, const Vec& W, const Vec* b, int N, int I, int O) {
  Vec out(size_t(N) * O);
  for (int n = 0; n < N; ++n)
    for (int o = 0; o < O; ++o) {
      double s = b ? (*b)[o] : 0.0;
      for (int i = 0; i < I; ++i) s += x[n * I + i] * W[i * O + o];
      out[n * O + o] = s;
    }
  return out;
}

// qkv [B*T, 3C] (q heads | k heads | v heads) -> [B*T, C]
inline Vec attention(const Vec& qkv, int B, int T, int H, int D) {
  const int C = H * D;
  Vec out(size_t(B) * T * C);
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < H; ++h)
      for (int t = 0; t < T; ++t) {
        auto at = [&](int s, int tt, int d) { return qkv[(size_t(b) * T + tt) * 3 * C + s * C + h * D + d]; };
        std::vector<double> sc(t + 1);
        double mx = -1e300;
        for (int j = 0; j <= t; ++j) {
          double s = 0;
          for (int d = 0; d < D; ++d) s += at(0, t, d) * at(1, j, d);
          sc[j] = s / std::sqrt(double(D));
          mx = std::max(mx, sc[j]);
        }
        double sum = 0;
        for (auto& s : sc) s = std::exp(s - mx), sum += s;
        for (int d = 0; d < D; ++d) {
          double y = 0;
          for (int j = 0; j <= t; ++j) y += sc[j] / sum * at(2, j, d);
          out[(size_t(b) * T + t) * C + h * D + d] = y;
        }
      }
  return out;
}

// Mean cross-entropy of logits [N,V] against targets.
inline double crossentropy(const Vec& logits, const std::vector<int32_t>& tgt, int N, int V) {
  double total = 0;
  for (int n = 0; n < N; ++n) {
    double mx = -1e300, sum = 0;
    for (int j = 0; j < V; ++j) mx = std::max(mx, logits[n * V + j]);
    for (int j = 0; j < V; ++j) sum += std::exp(logits[n * V + j] - mx);
    total += -(logits[n * V + tgt[n]] - mx - std::log(sum));
  }
  return total / N;
}

inline Vec slice(const Vec& p, size_t off, size_t n) { return Vec(p.begin() + off, p.begin() + off + n); }

// The whole model's mean loss, on the same parameter layout as dipaco::Model.
inline double model_loss(const dipaco::ModelShape& s, const Vec& p, const std::vector<int32_t>& tok,
                         const std::vector<int32_t>& tgt, int B) {
  auto L = dipaco::make_layout(s);
  const int N = B * s.T, C = s.C;
  auto view = [&](const std::string& name) {
    for (const auto& g : L.groups)
      for (const auto& v : g.views)
        if (v.name == name) return slice(p, g.offset + v.offset, v.size());
    throw std::runtime_error("no view " + name);
  };
  Vec wte = view("wte"), wpe = view("wpe");
  Vec x(size_t(N) * C);
  for (int n = 0; n < N; ++n)
    for (int c = 0; c < C; ++c) x[n * C + c] = wte[tok[n] * C + c] + wpe[(n % s.T) * C + c];
  for (int l = 0; l < s.L; ++l) {
    std::string b = "blocks." + std::to_string(l) + ".";
    Vec h = layernorm(x, view(b + "ln1.weight"), view(b + "ln1.bias"), N, C);
    Vec qb = view(b + "attn.qkv.bias"), pb = view(b + "attn.proj.bias");
    Vec a = attention(linear(h, view(b + "attn.qkv.weight"), &qb, N, C, 3 * C), B, s.T, s.H, C / s.H);
    Vec o = linear(a, view(b + "attn.proj.weight"), &pb, N, C, C);
    for (size_t i = 0; i < x.size(); ++i) x[i] += o[i];
    h = layernorm(x, view(b + "ln2.weight"), view(b + "ln2.bias"), N, C);
    Vec fb = view(b + "mlp.fc.bias"), f2b = view(b + "mlp.proj.bias");
    Vec f = gelu(linear(h, view(b + "mlp.fc.weight"), &fb, N, C, 4 * C));
    o = linear(f, view(b + "mlp.proj.weight"), &f2b, N, 4 * C, C);
    for (size_t i = 0; i < x.size(); ++i) x[i] += o[i];
  }
  Vec h = layernorm(x, view("lnf.weight"), view("lnf.bias"), N, C);
  Vec logits(size_t(N) * s.V);
  for (int n = 0; n < N; ++n)
    for (int v = 0; v < s.V; ++v) {
      double acc = 0;
      for (int c = 0; c < C; ++c) acc += h[n * C + c] * wte[v * C + c];
      logits[n * s.V + v] = acc;
    }
  return crossentropy(logits, tgt, N, s.V);
}

// Central finite difference of f at x[i], in double.
template <typename F>
double fd(F&& f, Vec& x, size_t i, double h = 1e-5) {
  double old = x[i];
  x[i] = old + h;
  double up = f();
  x[i] = old - h;
  double dn = f();
  x[i] = old;
  return (up - dn) / (2 * h);
}

}  // namespace ref
