#include "dipaco/model/model.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <random>
#include <string>

namespace dipaco {

size_t ParamView::size() const {
  size_t n = 1;
  for (int d : shape) n *= size_t(d);
  return n;
}

namespace {
// Views of one block, in arena order; offsets relative to the block start.
std::vector<ParamView> block_views(int C, int index) {
  std::string p = "blocks." + std::to_string(index) + ".";
  std::vector<ParamView> v = {
      {p + "ln1.weight", 0, {C}, false},          {p + "ln1.bias", 0, {C}, false},
      {p + "attn.qkv.weight", 0, {C, 3 * C}, true}, {p + "attn.qkv.bias", 0, {3 * C}, false},
      {p + "attn.proj.weight", 0, {C, C}, true},  {p + "attn.proj.bias", 0, {C}, false},
      {p + "ln2.weight", 0, {C}, false},          {p + "ln2.bias", 0, {C}, false},
      {p + "mlp.fc.weight", 0, {C, 4 * C}, true},   {p + "mlp.fc.bias", 0, {4 * C}, false},
      {p + "mlp.proj.weight", 0, {4 * C, C}, true}, {p + "mlp.proj.bias", 0, {C}, false},
  };
  size_t off = 0;
  for (auto& x : v) x.offset = off, off += x.size();
  return v;
}
}  // namespace

ParamLayout make_layout(const ModelShape& s) {
  ParamLayout L;
  ParamGroup emb{"embeddings", -1, 0, 0, 0, 0, {}};
  emb.views = {{"wte", 0, {s.V, s.C}, true}, {"wpe", 0, {s.T, s.C}, true}, {"lnf.weight", 0, {s.C}, false},
               {"lnf.bias", 0, {s.C}, false}};
  size_t off = 0;
  for (auto& v : emb.views) v.offset = off, off += v.size();
  emb.size = off;
  L.groups.push_back(emb);
  L.block_size = 0;
  for (auto& v : block_views(s.C, 0)) L.block_size += v.size();
  int first = 0;
  for (size_t l = 0; l < s.layers_per_level.size(); ++l) {
    ParamGroup g{"L" + std::to_string(l), int(l), first, s.layers_per_level[l], 0, 0, {}};
    for (int b = 0; b < g.n_blocks; ++b)
      for (auto v : block_views(s.C, first + b)) {
        v.offset += size_t(b) * L.block_size;
        g.views.push_back(v);
      }
    g.size = size_t(g.n_blocks) * L.block_size;
    L.groups.push_back(g);
    first += g.n_blocks;
  }
  for (auto& g : L.groups) g.offset = L.total, L.total += g.size;
  return L;
}

std::vector<float> init_params(const ModelShape& s, const ParamLayout& layout, uint64_t seed) {
  std::vector<float> p(layout.total, 0.0f);
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  const float proj_std = 0.02f / std::sqrt(2.0f * s.L);
  for (const auto& g : layout.groups)
    for (const auto& v : g.views) {
      float* x = p.data() + g.offset + v.offset;
      bool is_gain = v.name.ends_with("ln1.weight") || v.name.ends_with("ln2.weight") || v.name == "lnf.weight";
      if (is_gain) {
        std::fill(x, x + v.size(), 1.0f);
      } else if (v.decay) {
        bool proj = v.name.ends_with("attn.proj.weight") || v.name.ends_with("mlp.proj.weight");
        for (size_t i = 0; i < v.size(); ++i) x[i] = proj ? normal(rng) * (proj_std / 0.02f) : normal(rng);
      }
    }
  return p;
}

size_t Model::layer_floats() const {
  const size_t N = size_t(B_) * s_.T, C = s_.C;
  // ln1 qkv atty res2 ln2 fch fch_gelu res3 + att + 4 row stats
  return N * (C + 3 * C + C + C + C + 4 * C + 4 * C + C) + attention_saved_floats(fused_, B_, s_.H, s_.T) + 4 * N;
}

Model::LayerActs Model::acts(int l) const {
  const size_t N = size_t(B_) * s_.T, C = s_.C;
  float* p = acts_.get() + size_t(l) * layer_floats();
  auto take = [&](size_t n) {
    float* r = p;
    p += n;
    return r;
  };
  LayerActs a;
  a.ln1 = take(N * C), a.qkv = take(3 * N * C), a.atty = take(N * C), a.res2 = take(N * C), a.ln2 = take(N * C);
  a.fch = take(4 * N * C), a.fch_gelu = take(4 * N * C), a.res3 = take(N * C);
  a.att = take(attention_saved_floats(fused_, B_, s_.H, s_.T));
  a.ln1_mean = take(N), a.ln1_rstd = take(N), a.ln2_mean = take(N), a.ln2_rstd = take(N);
  return a;
}

Model::Model(Kernels& k, const ModelShape& s, int B, Precision p)
    : k_(k), s_(s), layout_(make_layout(s)), B_(B), p_(p), fused_(k.has_fused_attention(s.C / s.H)) {
  const size_t N = size_t(B) * s.T, C = s.C;
  acts_ = DeviceBuffer<float>(k, layer_floats() * s.L);
  encoded_ = DeviceBuffer<float>(k, N * C);
  lnf_ = DeviceBuffer<float>(k, N * C);
  lnf_mean_ = DeviceBuffer<float>(k, N);
  lnf_rstd_ = DeviceBuffer<float>(k, N);
  logits_ = DeviceBuffer<float>(k, N * s.V);
  losses_ = DeviceBuffer<float>(k, N);
  dres_ = DeviceBuffer<float>(k, N * C);
  dbuf_a_ = DeviceBuffer<float>(k, 4 * N * C);
  dbuf_b_ = DeviceBuffer<float>(k, 4 * N * C);
  dbuf_c_ = DeviceBuffer<float>(k, N * C);
  dqkv_ = DeviceBuffer<float>(k, 3 * N * C);
  attn_scratch_ = DeviceBuffer<float>(k, attention_scratch_floats(fused_, B, s.H, s.T));
  act_bytes_ = sizeof(float) * (acts_.size() + encoded_.size() + lnf_.size() + 2 * N + logits_.size() + N + dres_.size() +
                                dbuf_a_.size() + dbuf_b_.size() + dbuf_c_.size() + dqkv_.size() + attn_scratch_.size());
  const char* off = std::getenv("DIPACO_BF16_COPIES");
  copies_ = p == Precision::bf16 && !(off && std::string(off) == "0");
  if (copies_) {
    w16_ = DeviceBuffer<uint16_t>(k, layout_.total);
    acts16_ = DeviceBuffer<uint16_t>(k, 7 * N * C * s.L);
    lnf16_ = DeviceBuffer<uint16_t>(k, N * C);
    d16_ = DeviceBuffer<uint16_t>(k, N * std::max<size_t>(4 * C, s.V));  // the widest gradient a matmul takes
    act_bytes_ += sizeof(uint16_t) * (w16_.size() + acts16_.size() + lnf16_.size() + d16_.size());
  }
}

Model::LayerCopies Model::copies(int l) const {
  if (!copies_) return {};
  const size_t NC = size_t(B_) * s_.T * s_.C;
  uint16_t* p = acts16_.get() + 7 * NC * size_t(l);
  return {p, p + NC, p + 2 * NC, p + 3 * NC};
}

const uint16_t* Model::w16(const float* params, const float* W) const {
  return copies_ ? w16_.get() + (W - params) : nullptr;
}

void Model::refresh_weight_copy(const float* params) {
  if (!copies_) return;
  k_.to_bf16(w16_.get(), params, layout_.total);
  w16_of_ = params;
}

Model::BlockPtrs Model::block(const float* arena, int l) const {
  // Find the level holding block l; blocks of a level are consecutive in its group.
  for (const auto& g : layout_.groups) {
    if (g.level < 0 || l < g.first_block || l >= g.first_block + g.n_blocks) continue;
    float* b = const_cast<float*>(arena) + g.offset + size_t(l - g.first_block) * layout_.block_size;
    const size_t C = s_.C;
    BlockPtrs p;
    float* x = b;
    auto take = [&](size_t n) {
      float* r = x;
      x += n;
      return r;
    };
    p.ln1w = take(C), p.ln1b = take(C), p.qkvw = take(3 * C * C), p.qkvb = take(3 * C);
    p.projw = take(C * C), p.projb = take(C), p.ln2w = take(C), p.ln2b = take(C);
    p.fcw = take(4 * C * C), p.fcb = take(4 * C), p.fc2w = take(4 * C * C), p.fc2b = take(C);
    return p;
  }
  return {};
}

double Model::forward(const float* params, const int32_t* tok, const int32_t* tgt) {
  const int N = B_ * s_.T, C = s_.C, H = s_.H, D = C / H;
  const auto& emb = layout_.groups[0];
  const float* wte = params + emb.offset;
  const float* wpe = wte + size_t(s_.V) * C;
  const float* lnfw = wpe + size_t(s_.T) * C;
  const float* lnfb = lnfw + C;

  refresh_weight_copy(params);
  // bf16 copies of a matmul input, made as it is produced (copies_ only).
  auto round = [&](uint16_t* to, const float* from, size_t n) {
    if (copies_) k_.to_bf16(to, from, n);
  };
  k_.encoder_forward(encoded_.get(), tok, wte, wpe, N, s_.T, C);
  const float* x = encoded_.get();
  for (int l = 0; l < s_.L; ++l) {
    BlockPtrs w = block(params, l);
    LayerActs a = acts(l);
    LayerCopies c = copies(l);
    k_.layernorm_forward(a.ln1, a.ln1_mean, a.ln1_rstd, x, w.ln1w, w.ln1b, N, C);
    round(c.ln1, a.ln1, size_t(N) * C);
    linear_forward(k_, a.qkv, a.ln1, w.qkvw, w.qkvb, N, C, 3 * C, p_, false, {c.ln1, w16(params, w.qkvw)});
    attention_forward(k_, a.atty, a.att, a.qkv, B_, s_.T, H, D, p_);
    round(c.atty, a.atty, size_t(N) * C);
    k_.copy(a.res2, x, sizeof(float) * N * C);
    linear_forward(k_, a.res2, a.atty, w.projw, w.projb, N, C, C, p_, true, {c.atty, w16(params, w.projw)});
    k_.layernorm_forward(a.ln2, a.ln2_mean, a.ln2_rstd, a.res2, w.ln2w, w.ln2b, N, C);
    round(c.ln2, a.ln2, size_t(N) * C);
    linear_forward(k_, a.fch, a.ln2, w.fcw, w.fcb, N, C, 4 * C, p_, false, {c.ln2, w16(params, w.fcw)});
    k_.gelu_forward(a.fch_gelu, a.fch, size_t(N) * 4 * C);
    round(c.fch_gelu, a.fch_gelu, size_t(N) * 4 * C);
    k_.copy(a.res3, a.res2, sizeof(float) * N * C);
    linear_forward(k_, a.res3, a.fch_gelu, w.fc2w, w.fc2b, N, 4 * C, C, p_, true, {c.fch_gelu, w16(params, w.fc2w)});
    x = a.res3;
  }
  k_.layernorm_forward(lnf_.get(), lnf_mean_.get(), lnf_rstd_.get(), x, lnfw, lnfb, N, C);
  round(lnf16_.get(), lnf_.get(), size_t(N) * C);
  GemmShape s;  // logits = lnf * wte^T
  s.M = N, s.N = s_.V, s.K = C, s.trans_b = true, s.precision = p_;
  if (copies_) s.a_bf16 = lnf16_.get(), s.b_bf16 = w16(params, wte);
  k_.gemm(s, lnf_.get(), wte, logits_.get(), nullptr);
  k_.softmax_crossentropy_forward(logits_.get(), losses_.get(), tgt, N, s_.V);
  return k_.sum(losses_.get(), N) / N;
}

void Model::backward(const float* params, float* grads, const int32_t* tok, const int32_t* tgt, float loss_scale) {
  const int N = B_ * s_.T, C = s_.C, H = s_.H, D = C / H;
  const auto& emb = layout_.groups[0];
  const float* wte = params + emb.offset;
  const float* lnfw = wte + size_t(s_.V + s_.T) * C;
  float* dwte = grads + emb.offset;
  float* dwpe = dwte + size_t(s_.V) * C;
  float* dlnfw = dwpe + size_t(s_.T) * C;
  float* dlnfb = dlnfw + C;

  if (copies_ && w16_of_ != params) refresh_weight_copy(params);
  uint16_t* d16 = copies_ ? d16_.get() : nullptr;  // a gradient, rounded once for the two matmuls that take it
  float* dlogits = logits_.get();  // probabilities become their gradient in place
  k_.softmax_crossentropy_backward(dlogits, tgt, N, s_.V, loss_scale);
  if (d16) k_.to_bf16(d16, dlogits, size_t(N) * s_.V);
  float* dlnf = dbuf_c_.get();
  GemmShape s;  // dlnf = dlogits * wte
  s.M = N, s.N = C, s.K = s_.V, s.precision = p_;
  if (copies_) s.a_bf16 = d16, s.b_bf16 = w16(params, wte);
  k_.gemm(s, dlogits, wte, dlnf, nullptr);
  GemmShape sw;  // dwte += dlogits^T * lnf
  sw.M = s_.V, sw.N = C, sw.K = N, sw.trans_a = true, sw.accumulate = true, sw.precision = p_;
  if (copies_) sw.a_bf16 = d16, sw.b_bf16 = lnf16_.get();
  k_.gemm(sw, dlogits, lnf_.get(), dwte, nullptr);

  float* dres = dres_.get();
  k_.zero(dres, sizeof(float) * N * C);
  const float* x_last = s_.L > 0 ? acts(s_.L - 1).res3 : encoded_.get();
  k_.layernorm_backward(dres, dlnfw, dlnfb, dlnf, x_last, lnfw, lnf_mean_.get(), lnf_rstd_.get(), N, C);

  for (int l = s_.L - 1; l >= 0; --l) {
    BlockPtrs w = block(params, l), dw = block(grads, l);
    LayerActs a = acts(l);
    LayerCopies c = copies(l);
    const float* x = l > 0 ? acts(l - 1).res3 : encoded_.get();
    float *da = dbuf_a_.get(), *db = dbuf_b_.get(), *dc = dbuf_c_.get();
    // MLP: res3 = res2 + proj(gelu(fc(ln2(res2))))
    linear_backward(k_, da, dw.fc2w, dw.fc2b, dres, a.fch_gelu, w.fc2w, N, 4 * C, C, p_,
                    {c.fch_gelu, w16(params, w.fc2w), d16});
    k_.gelu_backward(db, a.fch, da, size_t(N) * 4 * C);
    linear_backward(k_, dc, dw.fcw, dw.fcb, db, a.ln2, w.fcw, N, C, 4 * C, p_, {c.ln2, w16(params, w.fcw), d16});
    k_.layernorm_backward(dres, dw.ln2w, dw.ln2b, dc, a.res2, w.ln2w, a.ln2_mean, a.ln2_rstd, N, C);
    // Attention: res2 = x + proj(attn(qkv(ln1(x))))
    linear_backward(k_, dc, dw.projw, dw.projb, dres, a.atty, w.projw, N, C, C, p_, {c.atty, w16(params, w.projw), d16});
    attention_backward(k_, dqkv_.get(), dc, a.qkv, a.atty, a.att, attn_scratch_.get(), B_, s_.T, H, D, p_);
    linear_backward(k_, dc, dw.qkvw, dw.qkvb, dqkv_.get(), a.ln1, w.qkvw, N, C, 3 * C, p_, {c.ln1, w16(params, w.qkvw), d16});
    k_.layernorm_backward(dres, dw.ln1w, dw.ln1b, dc, x, w.ln1w, a.ln1_mean, a.ln1_rstd, N, C);
  }
  k_.encoder_backward(dwte, dwpe, dres, tok, N, s_.T, C);
}

}  // namespace dipaco
