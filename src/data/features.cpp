#include "dipaco/data/features.hpp"

#include <algorithm>

#include "dipaco/data/padded_batches.hpp"
#include "dipaco/dist/gather_rows.hpp"

namespace dipaco {

ModelShape prefix_shape(const ModelShape& s, int prefix) {
  ModelShape p = s;
  p.T = std::max(1, std::min(prefix, s.T));
  return p;
}

std::vector<float> prefix_params(const ModelShape& s, const std::vector<float>& params, int prefix) {
  // The flat vector starts wte [V, C], wpe [T, C] (model.cpp): drop wpe's rows past the prefix.
  const ModelShape p = prefix_shape(s, prefix);
  const size_t keep = size_t(s.V + p.T) * s.C, cut = size_t(s.T - p.T) * s.C;
  std::vector<float> out(params.begin(), params.begin() + keep);
  out.insert(out.end(), params.begin() + keep + cut, params.end());
  if (out.size() != make_layout(p).total) throw std::runtime_error("internal: the prefix model's layout is not the cut one");
  return out;
}

namespace {
int prefix_batch(const ModelShape& s, int batch, int prefix) {
  return std::max(1, batch * s.T / prefix_shape(s, prefix).T);
}
}  // namespace

FeatureModel::FeatureModel(Kernels& k, const ModelShape& s, Precision p, const std::vector<float>& params, int batch,
                           int prefix)
    : k_(k), shape_(prefix_shape(s, prefix)), model_(k, shape_, prefix_batch(s, batch, prefix), p),
      params_(k, make_layout(shape_).total), tok_(k, size_t(model_.batch()) * shape_.T),
      tgt_(k, size_t(model_.batch()) * shape_.T) {
  const std::vector<float> cut = prefix_params(s, params, prefix);
  k.to_device(params_.get(), cut.data(), cut.size() * sizeof(float));
}

std::vector<float> FeatureModel::local_features(const std::vector<FeatureWindow>& windows) {
  const int T = shape_.T, C = shape_.C, B = model_.batch();
  const int m = T;  // positions pooled: the whole prefix
  std::vector<float> out(windows.size() * C, 0.0f);
  std::vector<int32_t> tok(size_t(B) * T, 0), tgt(size_t(B) * T, 0);
  std::vector<float> hidden(size_t(B) * T * C);
  auto fill = [&](size_t b, size_t item) {
    const FeatureWindow& w = windows[item];
    read_document(*w.doc, w.begin, size_t(T), &tok[b * T]);
  };
  padded_batches(windows.size(), B, fill, [&](size_t first, size_t used) {
    k_.to_device(tok_.get(), tok.data(), tok.size() * sizeof(int32_t));
    k_.to_device(tgt_.get(), tgt.data(), tgt.size() * sizeof(int32_t));
    model_.forward(params_.get(), tok_.get(), tgt_.get());
    k_.to_host(hidden.data(), model_.hidden(), hidden.size() * sizeof(float));
    for (size_t b = 0; b < used; ++b) {
      const FeatureWindow& w = windows[first + b];
      // A document shorter than the prefix is pooled over what it has (its end byte included).
      const size_t left = w.doc->tokens() + 1 > w.begin ? w.doc->tokens() + 1 - w.begin : 1;
      const int n = int(std::min<size_t>(m, left));
      float* f = &out[(first + b) * C];
      for (int t = 0; t < n; ++t)
        for (int c = 0; c < C; ++c) f[c] += hidden[(b * T + t) * C + c] / float(n);
    }
  });
  return out;
}

std::vector<float> FeatureModel::features(const std::vector<FeatureWindow>& windows, MPI_Comm comm) {
  int rank, size;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  // Rank r pools a contiguous block of windows; the blocks are then gathered (not a
  // mostly-zero all-reduce).
  const size_t lo = windows.size() * size_t(rank) / size, hi = windows.size() * size_t(rank + 1) / size;
  const std::vector<FeatureWindow> mine(windows.begin() + lo, windows.begin() + hi);
  return gather_rows(local_features(mine), size_t(shape_.C), true, comm, "the routing-feature gather");
}

}  // namespace dipaco
