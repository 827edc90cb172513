// Training-step throughput for one model shape: forward + backward + AdamW on
// random tokens, timed after warm-up. Prints one JSON line per run; with
// --profile also the time per kernel.
//   dipaco_bench --d 256 --layers 4 --heads 4 --T 256 --B 8 --steps 10 [--repeat 3] [--precision fp32|tf32|bf16 | --bf16] [--profile]
#include <immintrin.h>
#include <omp.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <random>
#include <string>

#include "dipaco/io/deck.hpp"
#include "dipaco/model/model.hpp"
#include "dipaco/model/optimizer.hpp"

using namespace dipaco;
using Clock = std::chrono::steady_clock;

namespace {

// Parameters outside the embeddings: the 6N of the usual flops-per-token estimate.
size_t count_non_embedding(const ModelShape& s) { return size_t(s.L) * (12 * size_t(s.C) * s.C + 13 * size_t(s.C)) + 2 * s.C; }

// Wraps a Kernels and accumulates wall time per primitive.
class TimedKernels final : public Kernels {
 public:
  explicit TimedKernels(Kernels& k) : k_(k) {}
  std::map<std::string, double> t;
  struct Scope {
    TimedKernels& s;
    const char* n;
    Clock::time_point t0 = Clock::now();
    ~Scope() {
      s.k_.synchronize();
      s.t[n] += std::chrono::duration<double>(Clock::now() - t0).count();
    }
  };
#define TIMED(NAME, CALL) \
  Scope timer_{*this, NAME}; \
  return CALL
  std::string name() const override { return k_.name(); }
  bool device_memory() const override { return k_.device_memory(); }
  void* alloc_bytes(size_t b) override { return k_.alloc_bytes(b); }
  void release(void* p) override { k_.release(p); }
  void to_device(void* d, const void* s, size_t n) override { k_.to_device(d, s, n); }
  void to_host(void* d, const void* s, size_t n) override { k_.to_host(d, s, n); }
  void copy(void* d, const void* s, size_t n) override { TIMED("copy", k_.copy(d, s, n)); }
  void zero(void* d, size_t n) override { TIMED("zero", k_.zero(d, n)); }
  void synchronize() override { k_.synchronize(); }
  void gemm(const GemmShape& s, const float* A, const float* B, float* C, const float* bias) override {
    TIMED(s.batch > 1 ? "gemm_attention" : "gemm_linear", k_.gemm(s, A, B, C, bias));
  }
  void to_bf16(uint16_t* o, const float* in, size_t n) override { TIMED("to_bf16", k_.to_bf16(o, in, n)); }
  void encoder_forward(float* o, const int32_t* t, const float* a, const float* b, int N, int T, int C) override {
    TIMED("encoder", k_.encoder_forward(o, t, a, b, N, T, C));
  }
  void encoder_backward(float* a, float* b, const float* d, const int32_t* t, int N, int T, int C) override {
    TIMED("encoder", k_.encoder_backward(a, b, d, t, N, T, C));
  }
  void layernorm_forward(float* o, float* m, float* r, const float* x, const float* w, const float* b, int N, int C) override {
    TIMED("layernorm", k_.layernorm_forward(o, m, r, x, w, b, N, C));
  }
  void layernorm_backward(float* dx, float* dw, float* db, const float* d, const float* x, const float* w,
                          const float* m, const float* r, int N, int C) override {
    TIMED("layernorm", k_.layernorm_backward(dx, dw, db, d, x, w, m, r, N, C));
  }
  void gelu_forward(float* o, const float* x, size_t n) override { TIMED("gelu", k_.gelu_forward(o, x, n)); }
  void gelu_backward(float* dx, const float* x, const float* d, size_t n) override { TIMED("gelu", k_.gelu_backward(dx, x, d, n)); }
  void add(float* o, const float* a, const float* b, size_t n) override { TIMED("add", k_.add(o, a, b, n)); }
  void bias_backward(float* db, const float* d, int M, int N) override { TIMED("bias_backward", k_.bias_backward(db, d, M, N)); }
  void causal_softmax_forward(float* a, const float* s, int BH, int T, float sc) override {
    TIMED("softmax", k_.causal_softmax_forward(a, s, BH, T, sc));
  }
  void causal_softmax_backward(float* ds, const float* da, const float* a, int BH, int T, float sc) override {
    TIMED("softmax", k_.causal_softmax_backward(ds, da, a, BH, T, sc));
  }
  int causal_block_rows(int T, Precision p) const override { return k_.causal_block_rows(T, p); }
  bool has_fused_attention(int d) const override { return k_.has_fused_attention(d); }
  void fused_attention_forward(float* o, float* a, const float* qkv, int B, int T, int H, int D, float sc,
                               Precision p) override {
    TIMED("attention", k_.fused_attention_forward(o, a, qkv, B, T, H, D, sc, p));
  }
  void fused_attention_backward(float* dqkv, const float* d, const float* qkv, const float* o, const float* a, int B,
                                int T, int H, int D, float sc, Precision p) override {
    TIMED("attention", k_.fused_attention_backward(dqkv, d, qkv, o, a, B, T, H, D, sc, p));
  }
  void softmax_crossentropy_forward(float* p, float* l, const int32_t* t, int N, int V) override {
    TIMED("crossentropy", k_.softmax_crossentropy_forward(p, l, t, N, V));
  }
  void softmax_crossentropy_backward(float* p, const int32_t* t, int N, int V, float s) override {
    TIMED("crossentropy", k_.softmax_crossentropy_backward(p, t, N, V, s));
  }
  double sum(const float* x, size_t n) override { TIMED("reduce", k_.sum(x, n)); }
  double sum_squares(const float* x, size_t n) override { TIMED("reduce", k_.sum_squares(x, n)); }
  void scale(float* x, float s, size_t n) override { TIMED("reduce", k_.scale(x, s, n)); }
  void adamw(float* p, const float* g, float* m, float* v, size_t n, float lr, float b1, float b2, float eps, float wd,
             long t) override {
    TIMED("adamw", k_.adamw(p, g, m, v, n, lr, b1, b2, eps, wd, t));
  }
  void weighted_difference(float* o, const float* a, const float* x, float w, size_t n) override {
    k_.weighted_difference(o, a, x, w, n);
  }
  void outer_nesterov(float* a, float* m, const float* d, size_t n, float lr, float mu) override {
    k_.outer_nesterov(a, m, d, n, lr, mu);
  }

 private:
  Kernels& k_;
};

// Measured fp32 FMA peak: 12 independent multiply-add chains in vector
// registers on every thread, at the widest FMA this CPU has (the build itself
// targets baseline x86-64, so the loops carry their own target attributes).
// The fastest of several short bursts: on a shared machine one burst may lose
// its core to another process, and the peak is what an idle core does.
#define DIPACO_FMA_BURSTS(V, FMA, SET, LANES)                                                              \
  const long iters = 2000000;                                                                                   \
  V b = SET(0.999999f), c = SET(1e-7f * (omp_get_thread_num() + 1));                                           \
  V a0 = SET(0), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0, a8 = a0, a9 = a0, a10 = a0, a11 = a0; \
  double best = 1e30;                                                                                           \
  for (int burst = 0; burst < 10; ++burst) {                                                                    \
    auto t0 = Clock::now();                                                                                     \
    for (long k = 0; k < iters; ++k) {                                                                          \
      a0 = FMA(a0, b, c), a1 = FMA(a1, b, c), a2 = FMA(a2, b, c), a3 = FMA(a3, b, c);                           \
      a4 = FMA(a4, b, c), a5 = FMA(a5, b, c), a6 = FMA(a6, b, c), a7 = FMA(a7, b, c);                           \
      a8 = FMA(a8, b, c), a9 = FMA(a9, b, c), a10 = FMA(a10, b, c), a11 = FMA(a11, b, c);                       \
    }                                                                                                           \
    best = std::min(best, std::chrono::duration<double>(Clock::now() - t0).count());                           \
  }                                                                                                             \
  V sum = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11;                                          \
  if (sum[0] == 12345.0f) std::printf(" "); /* keeps the chains alive */                                        \
  return iters * 12.0 * LANES * 2 / best / 1e9;

__attribute__((target("avx512f"))) double peak512() { DIPACO_FMA_BURSTS(__m512, _mm512_fmadd_ps, _mm512_set1_ps, 16) }
__attribute__((target("avx2,fma"))) double peak256() { DIPACO_FMA_BURSTS(__m256, _mm256_fmadd_ps, _mm256_set1_ps, 8) }

double fma_peak_gflops(int threads) {
  const bool avx512 = __builtin_cpu_supports("avx512f");
  if (!avx512 && !__builtin_cpu_supports("fma")) return 0;
  double total = 0;
#pragma omp parallel num_threads(threads) reduction(+ : total)
  total += avx512 ? peak512() : peak256();
  return total;
}

}  // namespace

int main(int argc, char** argv) {
  int d = 256, L = 4, H = 4, T = 256, B = 8, steps = 10, repeat = 3;
  std::string precision = "fp32";
  bool profile = false;
  std::string device = "cpu";
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&] { return std::atoi(argv[++i]); };
    if (a == "--d") d = next();
    else if (a == "--layers") L = next();
    else if (a == "--heads") H = next();
    else if (a == "--T") T = next();
    else if (a == "--B") B = next();
    else if (a == "--steps") steps = next();
    else if (a == "--repeat") repeat = std::max(1, next());
    else if (a == "--bf16") precision = "bf16";
    else if (a == "--precision") precision = argv[++i];
    else if (a == "--profile") profile = true;
    else if (a == "--device") device = argv[++i];
    else if (a == "--peak") {
      std::printf("{\"fma_peak_gflops\":%.1f,\"threads\":%d}\n", fma_peak_gflops(omp_get_max_threads()), omp_get_max_threads());
      return 0;
    }
    else {
      std::fprintf(stderr, "unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  const auto prec = choice_of<Precision>(precision);
  const auto dev = choice_of<Device>(device);
  if (!prec || !dev) {
    std::fprintf(stderr, "--precision %s --device %s: one of %s, one of %s\n", precision.c_str(), device.c_str(),
                 choice_names<Precision>.data(), choice_names<Device>.data());
    return 2;
  }
  auto base = make_kernels(*dev);
  TimedKernels timed(*base);
  Kernels& k = profile ? static_cast<Kernels&>(timed) : *base;
  ModelShape s;
  s.C = d, s.L = L, s.H = H, s.T = T, s.layers_per_level = {L};
  Model model(k, s, B, *prec);
  const auto& layout = model.layout();
  auto init = init_params(s, layout, 1);
  DeviceBuffer<float> p(k, layout.total), g(k, layout.total), m(k, layout.total), v(k, layout.total);
  k.to_device(p.get(), init.data(), init.size() * 4);
  std::vector<int32_t> tok(size_t(B) * T), tgt(size_t(B) * T);
  std::mt19937 rng(1);
  for (size_t i = 0; i < tok.size(); ++i) tok[i] = rng() % 256, tgt[i] = rng() % 256;
  DeviceBuffer<int32_t> tokd(k, tok.size()), tgtd(k, tgt.size());
  k.to_device(tokd.get(), tok.data(), tok.size() * 4);
  k.to_device(tgtd.get(), tgt.data(), tgt.size() * 4);
  Deck::Train cfg{};
  cfg.beta1 = 0.9, cfg.beta2 = 0.95, cfg.eps = 1e-8, cfg.weight_decay = 0.1;
  auto step = [&](long t) {
    k.zero(g.get(), layout.total * 4);
    model.forward(p.get(), tokd.get(), tgtd.get());
    model.backward(p.get(), g.get(), tokd.get(), tgtd.get(), 1.0f / (B * T));
    clip_gradients(k, g.get(), layout.total, 1.0);
    adamw_step(k, layout, p.get(), g.get(), m.get(), v.get(), t, 1e-4, cfg);
  };
  step(1), step(2);  // warm-up: primitive creation, thread pool
  k.synchronize();
  // The fastest of `repeat` rounds: on a shared machine a round may lose its
  // core to another process, and the speed is what an idle core does.
  double sec = 1e30;
  long t = 3;
  std::map<std::string, double> best;
  for (int r = 0; r < repeat; ++r) {
    timed.t.clear();
    auto t0 = Clock::now();
    for (int i = 0; i < steps; ++i) step(t++);
    k.synchronize();
    double round = std::chrono::duration<double>(Clock::now() - t0).count();
    if (round < sec) sec = round, best = timed.t;
  }
  timed.t = best;
  double tok_s = double(B) * T * steps / sec;
  double flops_per_token = 6.0 * count_non_embedding(s) + 12.0 * L * T * d;
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  std::printf("{\"d\":%d,\"layers\":%d,\"T\":%d,\"B\":%d,\"threads\":%d,\"precision\":\"%s\",\"device\":\"%s\","
              "\"tokens_per_s\":%.1f,\"gflops\":%.2f,\"peak_rss_mb\":%.1f,\"peak_device_mb\":%.1f,\"params\":%zu}\n",
              d, L, T, B, omp_get_max_threads(), precision.c_str(), device.c_str(), tok_s,
              tok_s * flops_per_token / 1e9, ru.ru_maxrss / 1024.0, base->peak_device_bytes() / 1048576.0, layout.total);
  if (profile) {
    double tot = 0;
    for (auto& [n, x] : timed.t) tot += x;
    for (auto& [n, x] : timed.t) std::fprintf(stderr, "  %-16s %7.2f ms/step  %5.1f%%\n", n.c_str(), 1e3 * x / steps, 100 * x / tot);
  }
  return 0;
}
