// The decoder-only transformer: token + learned position embeddings,
// pre-LayerNorm blocks (causal attention, GELU MLP 4x), final LayerNorm, head
// tied to the token embedding. Byte vocabulary (V = 256).
//
// Parameters live in one arena per path, cut into groups: group 0 is the
// embedding group (wte, wpe, final norm), group 1+l is the level-l module
// (layers_per_level[l] consecutive blocks). Each group is one flat buffer
// with named views; DiLoCo syncs and checkpoints work on whole groups.
#pragma once
#include <string>
#include <vector>

#include "dipaco/model/kernels.hpp"
#include "dipaco/model/layers.hpp"

namespace dipaco {

struct ModelShape {
  int V = 256, C = 128, L = 4, H = 4, T = 128;
  std::vector<int> layers_per_level{4};
};

struct ParamView {
  std::string name;  // e.g. "blocks.3.attn.qkv.weight"
  size_t offset;     // within its group
  std::vector<int> shape;
  bool decay;        // weight decay applies (matrices only)
  size_t size() const;
};

struct ParamGroup {
  std::string name;  // "embeddings" or "L0" ...
  int level;         // -1 for the embedding group
  int first_block, n_blocks;
  size_t offset, size;  // within the arena
  std::vector<ParamView> views;
};

struct ParamLayout {
  std::vector<ParamGroup> groups;
  size_t total = 0;
  size_t block_size = 0;
};

ParamLayout make_layout(const ModelShape& s);
// Deterministic initialisation (GPT-2 style, scaled residual projections) on the host.
std::vector<float> init_params(const ModelShape& s, const ParamLayout& layout, uint64_t seed);

// Activations for B sequences of T tokens; forward/backward over a param arena.
class Model {
 public:
  Model(Kernels& k, const ModelShape& s, int B, Precision p);
  // Mean cross-entropy (nats per token) over the B*T targets; tokens and
  // targets are device int32 arrays of length B*T.
  double forward(const float* params, const int32_t* tok, const int32_t* tgt);
  // grads += d(loss_scale * sum of per-token losses)/d(params). Call after forward.
  void backward(const float* params, float* grads, const int32_t* tok, const int32_t* tgt, float loss_scale);
  const float* token_losses() const { return losses_.get(); }  // device [B*T]
  const float* probabilities() const { return logits_.get(); }  // device [B*T, V], after forward
  const float* hidden() const { return lnf_.get(); }           // device [B*T, C], final-norm output
  int batch() const { return B_; }
  const ModelShape& shape() const { return s_; }
  const ParamLayout& layout() const { return layout_; }
  size_t activation_bytes() const { return act_bytes_; }

 private:
  struct BlockPtrs {
    float *ln1w, *ln1b, *qkvw, *qkvb, *projw, *projb, *ln2w, *ln2b, *fcw, *fcb, *fc2w, *fc2b;
  };
  struct LayerActs {
    float *ln1, *ln1_mean, *ln1_rstd, *qkv, *atty, *res2, *ln2, *ln2_mean, *ln2_rstd, *fch, *fch_gelu, *res3;
    float* att;  // attention probabilities [B,H,T,T]
  };
  LayerActs acts(int l) const;
  // bf16 copies of a layer's matmul inputs (Bf16Copies), in bf16 only.
  struct LayerCopies {
    uint16_t *ln1, *atty, *ln2, *fch_gelu;
  };
  LayerCopies copies(int l) const;
  // W's place in the weights' bf16 copy (null without copies).
  const uint16_t* w16(const float* params, const float* W) const;
  void refresh_weight_copy(const float* params);
  size_t layer_floats() const;
  BlockPtrs block(const float* arena, int l) const;

  Kernels& k_;
  ModelShape s_;
  ParamLayout layout_;
  int B_;
  Precision p_;
  bool fused_;  // the kernels attend in one kernel: att holds row stats, no scratch
  // bf16: each matmul operand rounded once (weights once a step), not in every
  // matmul; DIPACO_BF16_COPIES=0 turns it off (the benchmark's baseline).
  bool copies_ = false;
  const float* w16_of_ = nullptr;  // the arena the weights' copy was made from
  size_t act_bytes_ = 0;
  DeviceBuffer<float> acts_, encoded_, lnf_, lnf_mean_, lnf_rstd_, logits_, losses_, dres_, dbuf_a_, dbuf_b_, dbuf_c_,
      dqkv_, attn_scratch_;
  DeviceBuffer<uint16_t> w16_, acts16_, lnf16_, d16_;
};

}  // namespace dipaco
