// Layers as forward/backward pairs over raw device pointers, composed from
// the Kernels primitives. Backward functions accumulate (+=) into weight and
// bias gradients and overwrite the input gradient.
#pragma once
#include "dipaco/model/kernels.hpp"

namespace dipaco {

// bf16 copies of a linear layer's operands (precision bf16), each rounded once
// and multiplied twice: inp by the forward and by dW, W by the forward and by
// dinp, dout by dinp and by dW (rounded into dout_scratch, N*O values, in the
// backward). A null one is rounded inside each matmul instead, to the same bits.
struct Bf16Copies {
  const uint16_t* inp = nullptr;
  const uint16_t* W = nullptr;
  uint16_t* dout_scratch = nullptr;
};

// out[N,O] (+)= inp[N,I] * W[I,O] + b   (accumulate: add into out, e.g. a residual)
void linear_forward(Kernels& k, float* out, const float* inp, const float* W, const float* b, int N, int I, int O,
                    Precision p, bool accumulate = false, const Bf16Copies& copies = {});
// dinp = dout * W^T (skipped when dinp is null); dW += inp^T * dout; db += colsum(dout)
void linear_backward(Kernels& k, float* dinp, float* dW, float* db, const float* dout, const float* inp, const float* W,
                     int N, int I, int O, Precision p, const Bf16Copies& copies = {});

// Causal multi-head self-attention core: qkv [B*T, 3C] -> out [B*T, C], heads
// read and written in place through strided matmuls. Saves in att [B,H,T,T]
// what the backward pass needs: the probabilities (only the causal part is
// meaningful), or with the kernels' fused attention each row's max and 1/sum
// (its first 2*B*H*T floats).
// block_rows: query rows per causal block, 0 for the kernels' choice (their fused
// attention where they have one and T >= 2: then fp32 whatever p says).
void attention_forward(Kernels& k, float* out, float* att, const float* qkv, int B, int T, int H, int D, Precision p,
                       int block_rows = 0);
// dqkv = d(qkv), overwritten; out is the forward's output. Scratch must hold datt
// and dscores (2*B*H*T*T floats; none with fused attention).
void attention_backward(Kernels& k, float* dqkv, const float* dout, const float* qkv, const float* out, const float* att,
                        float* scratch,
                        int B, int T, int H, int D, Precision p, int block_rows = 0);

// Floats of att and of the backward's scratch, for kernels with fused attention
// (Kernels::has_fused_attention for the head size) or without.
size_t attention_saved_floats(bool fused_kernels, int B, int H, int T);
size_t attention_scratch_floats(bool fused_kernels, int B, int H, int T);

}  // namespace dipaco
