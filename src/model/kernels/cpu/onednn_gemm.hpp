// Batched, strided matmuls through oneDNN primitives, created once per shape
// and reused. bf16 converts the operands on the fly and accumulates in fp32.
// CPUs without a bf16 matmul in oneDNN (no AVX-512) get the same numerics
// from an fp32 matmul on operands rounded to bf16.
#pragma once
#include <oneapi/dnnl/dnnl.hpp>
#include <string>
#include <unordered_map>
#include <vector>

#include "dipaco/model/kernels.hpp"

namespace dipaco {

class OnednnGemm {
 public:
  OnednnGemm();
  void run(const GemmShape& s, const float* A, const float* B, float* C, const float* bias);
  // The conversion run() applies to bf16 operands, over the threads.
  static void to_bf16(uint16_t* out, const float* in, size_t n);

 private:
  struct Entry {
    dnnl::matmul prim;
    dnnl::memory::desc a, b, c, bias;
    bool emulated_bf16 = false;  // no bf16 matmul on this CPU: fp32 on bf16-rounded operands
  };
  Entry& entry(const GemmShape& s, bool has_bias);

  dnnl::engine engine_;
  dnnl::stream stream_;
  std::unordered_map<std::string, Entry> cache_;
  std::vector<uint16_t> a_bf16_, b_bf16_;
  std::vector<float> a_round_, b_round_;  // emulated bf16: operands rounded, in fp32
};

}  // namespace dipaco
