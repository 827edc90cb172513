// The ceiling oneDNN's matmuls set on a training step: each linear-layer
// matmul of a model (forward, input gradient, weight gradient) timed alone
// through oneDNN, with the weights plain or in oneDNN's own prepacked layout
// (format_tag::any), in fp32 and with operands already in bf16. Prints one
// JSON line per shape and variant: GFLOP/s and the implementation chosen.
//   dipaco_bench_gemm --d 128 --T 128 --B 16 [--repeat 30]
#include <oneapi/dnnl/dnnl.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

using namespace dnnl;
using dt = memory::data_type;

namespace {

struct Shape {
  const char* what;
  int M, K, N;
  bool trans_a, trans_b;
};

// The fastest of `repeat` calls, in GFLOP/s; impl gets oneDNN's implementation name.
double time_matmul(engine& eng, stream& s, const Shape& sh, dt type, bool packed_weights, int repeat, std::string& impl) {
  using tag = memory::format_tag;
  memory::desc a({sh.M, sh.K}, type, sh.trans_a ? memory::dims{1, sh.M} : memory::dims{sh.K, 1});
  memory::desc b = packed_weights ? memory::desc({sh.K, sh.N}, type, tag::any)
                                  : memory::desc({sh.K, sh.N}, type, sh.trans_b ? memory::dims{1, sh.K} : memory::dims{sh.N, 1});
  memory::desc c({sh.M, sh.N}, dt::f32, memory::dims{sh.N, 1});
  matmul::primitive_desc pd(matmul::desc(a, b, c), eng);
  impl = pd.impl_info_str();
  matmul m(pd);
  memory A(pd.src_desc(), eng), B(pd.weights_desc(), eng), C(pd.dst_desc(), eng);
  std::fill_n(static_cast<char*>(A.get_data_handle()), pd.src_desc().get_size(), 0);
  std::fill_n(static_cast<char*>(B.get_data_handle()), pd.weights_desc().get_size(), 0);
  double best = 1e30;
  for (int r = 0; r < repeat; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    m.execute(s, {{DNNL_ARG_SRC, A}, {DNNL_ARG_WEIGHTS, B}, {DNNL_ARG_DST, C}});
    s.wait();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return 2.0 * sh.M * sh.N * sh.K / best / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
  int d = 128, T = 128, B = 16, repeat = 30;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    const int v = std::atoi(argv[i + 1]);
    if (a == "--d") d = v;
    else if (a == "--T") T = v;
    else if (a == "--B") B = v;
    else if (a == "--repeat") repeat = std::max(1, v);
    else {
      std::fprintf(stderr, "usage: dipaco_bench_gemm --d D --T T --B B [--repeat R]\n");
      return 2;
    }
  }
  const int N = B * T;
  // x W (forward), dy W^T (input gradient), x^T dy (weight gradient) of the block's four linears.
  const Shape shapes[] = {{"qkv forward", N, d, 3 * d, false, false},      {"mlp.fc forward", N, d, 4 * d, false, false},
                          {"mlp.proj forward", N, 4 * d, d, false, false}, {"qkv input grad", N, 3 * d, d, false, true},
                          {"mlp.fc input grad", N, 4 * d, d, false, true},  {"qkv weight grad", d, N, 3 * d, true, false},
                          {"mlp.fc weight grad", d, N, 4 * d, true, false}, {"mlp.proj weight grad", 4 * d, N, d, true, false}};
  engine eng(engine::kind::cpu, 0);
  stream s(eng);
  for (const auto& sh : shapes)
    for (auto [name, type, packed] : {std::tuple{"fp32", dt::f32, false}, std::tuple{"fp32 packed weights", dt::f32, true},
                                      std::tuple{"bf16", dt::bf16, false}}) {
      std::string impl;
      double gflops = 0;
      try {
        gflops = time_matmul(eng, s, sh, type, packed, repeat, impl);
      } catch (const dnnl::error&) {
        impl = "unsupported";
      }
      std::printf("{\"shape\":\"%s\",\"MxKxN\":\"%dx%dx%d\",\"variant\":\"%s\",\"gflops\":%.1f,\"impl\":\"%s\"}\n", sh.what,
                  sh.M, sh.K, sh.N, name, gflops, impl.c_str());
    }
  return 0;
}
