#include "onednn_gemm.hpp"

#include "row_kernels.hpp"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <omp.h>

namespace dipaco {
namespace {

using dt = dnnl::memory::data_type;
using dims = dnnl::memory::dims;


// A [rows, cols] operand with row pitch ld, possibly stored transposed, possibly
// batched. The outer batch (batch2) is a loop in run(): oneDNN 2.6 gives strided
// 4-D matmuls its slow batched sgemm (44 GFLOP/s for the attention scores on one
// AVX-512 core, against 69 for the same work as 16 3-D calls).
dnnl::memory::desc operand(const GemmShape& s, long stride, int rows, int cols, bool trans, long ld, dt type) {
  dims d = {rows, cols};
  dims st = trans ? dims{1, ld} : dims{ld, 1};
  if (s.batch > 1) d.insert(d.begin(), s.batch), st.insert(st.begin(), stride);
  return dnnl::memory::desc(d, type, st);
}

// out[0, n) = convert(src[0, n)) in chunks over the threads.
template <typename T, typename S>
void chunked(T* out, const S* src, size_t n, void (*convert)(T*, const S*, size_t)) {
  constexpr size_t kChunk = 16384;
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; i += kChunk) convert(out + i, src + i, std::min(kChunk, n - i));
}

// Converts n values of src into buf (grown as needed) with one of the row kernels'
// conversions (rows::to_bf16 or rows::round_bf16: vector clones; this file is compiled
// for the baseline), or widens a caller's bf16 copy; returns buf's data.
template <typename T, typename S>
T* staged(std::vector<T>& buf, const S* src, size_t n, void (*convert)(T*, const S*, size_t)) {
  if (buf.size() < n) buf.resize(n);
  chunked(buf.data(), src, n, convert);
  return buf.data();
}

// bf16 values widened to fp32 (exact): a caller's bf16 copy for an emulated matmul.
void widen_bf16(float* out, const uint16_t* in, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    const uint32_t u = uint32_t(in[i]) << 16;
    std::memcpy(out + i, &u, sizeof u);
  }
}

// Said once per process: bf16 without bf16 matmul instructions is slower than fp32.
void note_emulated_bf16() {
  static bool said = false;
  if (said) return;
  said = true;
  std::fprintf(stderr,
               "dipaco: note: this CPU has no bf16 matmul instructions (AVX512_BF16 or AMX); bf16 is emulated by fp32 "
               "matmuls on bf16-rounded operands and trains slower than fp32\n");
}

}  // namespace

OnednnGemm::OnednnGemm() : engine_(dnnl::engine::kind::cpu, 0), stream_(engine_) {}

OnednnGemm::Entry& OnednnGemm::entry(const GemmShape& s, bool has_bias) {
  char key[256];
  std::snprintf(key, sizeof key, "%d.%d.%d.%d.%d%d.%ld.%ld.%ld.%d.%ld.%ld.%ld.%ld.%ld.%ld.%d%d%d", s.batch, s.M, s.N, s.K,
                s.trans_a, s.trans_b, s.stride_a, s.stride_b, s.stride_c, s.batch2, s.stride2_a, s.stride2_b, s.stride2_c,
                s.lda(), s.ldb(), s.ldc(), s.accumulate, int(s.precision), has_bias);
  auto it = cache_.find(key);
  if (it != cache_.end()) return it->second;

  dt in = s.precision == Precision::bf16 ? dt::bf16 : dt::f32;
  Entry e;
  auto a = [&](dt type) { return operand(s, s.stride_a, s.M, s.K, s.trans_a, s.lda(), type); };
  auto b = [&](dt type) { return operand(s, s.stride_b, s.K, s.N, s.trans_b, s.ldb(), type); };
  e.a = a(in), e.b = b(in);
  e.c = operand(s, s.stride_c, s.M, s.N, false, s.ldc(), dt::f32);
  if (has_bias) e.bias = s.batch > 1 ? dnnl::memory::desc({1, 1, s.N}, dt::f32, dims{s.N, s.N, 1})
                                     : dnnl::memory::desc({1, s.N}, dt::f32, dims{s.N, 1});
  dnnl::primitive_attr attr;
  if (s.accumulate) {
    dnnl::post_ops po;
    po.append_sum(1.0f);
    attr.set_post_ops(po);
  }
  auto make = [&] {
    return has_bias ? dnnl::matmul::primitive_desc(dnnl::matmul::desc(e.a, e.b, e.bias, e.c), attr, engine_)
                    : dnnl::matmul::primitive_desc(dnnl::matmul::desc(e.a, e.b, e.c), attr, engine_);
  };
  dnnl::matmul::primitive_desc pd;
  try {
    pd = make();
  } catch (const dnnl::error&) {
    if (in != dt::bf16) throw;
    e.emulated_bf16 = true;
    note_emulated_bf16();
    e.a = a(dt::f32), e.b = b(dt::f32);
    pd = make();
  }
  std::string impl = pd.impl_info_str();
  // The reference implementation is ~1000x slower: say so loudly, once per shape.
  if (impl.find("ref") != std::string::npos)
    std::fprintf(stderr, "dipaco: warning: oneDNN chose the slow reference matmul '%s' for shape %s\n", impl.c_str(), key);
  e.prim = dnnl::matmul(pd);
  return cache_.emplace(key, std::move(e)).first->second;
}

void OnednnGemm::run(const GemmShape& s, const float* A, const float* B, float* C, const float* bias) {
  Entry& e = entry(s, bias != nullptr);
  void* a = const_cast<float*>(A);
  void* b = const_cast<float*>(B);
  if (s.precision == Precision::bf16) {
    // An operand the caller rounded already is used as it is (widened when bf16 is emulated).
    const size_t na = s.extent_a(), nb = s.extent_b();
    if (e.emulated_bf16) {
      a = s.a_bf16 ? staged(a_round_, s.a_bf16, na, widen_bf16) : staged(a_round_, A, na, rows::round_bf16);
      b = s.b_bf16 ? staged(b_round_, s.b_bf16, nb, widen_bf16) : staged(b_round_, B, nb, rows::round_bf16);
    } else {
      a = s.a_bf16 ? const_cast<uint16_t*>(s.a_bf16) : staged(a_bf16_, A, na, rows::to_bf16);
      b = s.b_bf16 ? const_cast<uint16_t*>(s.b_bf16) : staged(b_bf16_, B, nb, rows::to_bf16);
    }
  }
  const size_t esize = s.precision == Precision::bf16 && !e.emulated_bf16 ? sizeof(uint16_t) : sizeof(float);
  for (int o = 0; o < s.batch2; ++o) {
    auto* ao = static_cast<char*>(a) + size_t(o) * s.stride2_a * esize;
    auto* bo = static_cast<char*>(b) + size_t(o) * s.stride2_b * esize;
    std::unordered_map<int, dnnl::memory> args = {
        {DNNL_ARG_SRC, dnnl::memory(e.a, engine_, ao)},
        {DNNL_ARG_WEIGHTS, dnnl::memory(e.b, engine_, bo)},
        {DNNL_ARG_DST, dnnl::memory(e.c, engine_, C + size_t(o) * s.stride2_c)},
    };
    if (bias) args.emplace(DNNL_ARG_BIAS, dnnl::memory(e.bias, engine_, const_cast<float*>(bias)));
    e.prim.execute(stream_, args);
  }
  stream_.wait();
}

void OnednnGemm::to_bf16(uint16_t* out, const float* in, size_t n) { chunked(out, in, n, rows::to_bf16); }

}  // namespace dipaco
