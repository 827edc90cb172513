#include "dipaco/data/features.hpp"

#include <algorithm>

#include "dipaco/data/padded_batches.hpp"
#include "dipaco/dist/gather_rows.hpp"

namespace dipaco {

FeatureModel::FeatureModel(Kernels& k, const ModelShape& s, Precision p, const std::vector<float>& params, int batch)
    : k_(k), shape_(s), model_(k, s, batch, p), params_(k, params.size()), tok_(k, size_t(batch) * s.T),
      tgt_(k, size_t(batch) * s.T) {
  k.to_device(params_.get(), params.data(), params.size() * sizeof(float));
}

std::vector<float> FeatureModel::local_features(const std::vector<FeatureWindow>& windows, int prefix) {
  const int T = shape_.T, C = shape_.C, B = model_.batch();
  const int m = std::min(prefix, T);  // positions pooled
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

std::vector<float> FeatureModel::features(const std::vector<FeatureWindow>& windows, int prefix, MPI_Comm comm) {
  int rank, size;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  // Rank r pools a contiguous block of windows; the blocks are then gathered (not a
  // mostly-zero all-reduce).
  const size_t lo = windows.size() * size_t(rank) / size, hi = windows.size() * size_t(rank + 1) / size;
  const std::vector<FeatureWindow> mine(windows.begin() + lo, windows.begin() + hi);
  return gather_rows(local_features(mine, prefix), size_t(shape_.C), true, comm, "the routing-feature gather");
}

}  // namespace dipaco
