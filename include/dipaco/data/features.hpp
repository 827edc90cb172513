// Routing features: the warm-start model's final hidden state, mean-pooled
// over the first prefix tokens of a window of a document. The same features
// route training documents (offline) and validation documents (at test time).
#pragma once
#include <mpi.h>

#include <vector>

#include "dipaco/data/corpus.hpp"
#include "dipaco/model/kernels.hpp"
#include "dipaco/model/model.hpp"

namespace dipaco {

// Tokens [begin, begin + prefix) of a document's stream (its tokens, then its end token).
struct FeatureWindow {
  const Document* doc;
  size_t begin = 0;
};


// The model is causal: the hidden states of the first `prefix` positions are
// those of a model whose context is the prefix. Features therefore run that
// shorter model (the position table cut to its rows), never the whole context.
ModelShape prefix_shape(const ModelShape& s, int prefix);
std::vector<float> prefix_params(const ModelShape& s, const std::vector<float>& params, int prefix);

class FeatureModel {
 public:
  // `batch`: windows of the full context a forward may hold; the prefix model takes
  // as many more windows as the context is longer than the prefix.
  FeatureModel(Kernels& k, const ModelShape& s, Precision p, const std::vector<float>& params, int batch, int prefix);
  // Collective over comm: the windows are split over its ranks; every rank gets all features [n, dim()].
  std::vector<float> features(const std::vector<FeatureWindow>& windows, MPI_Comm comm);
  // This rank's windows only, no communication: [windows.size(), dim()].
  std::vector<float> local_features(const std::vector<FeatureWindow>& windows);
  int dim() const { return shape_.C; }

 private:
  Kernels& k_;
  ModelShape shape_;
  Model model_;
  DeviceBuffer<float> params_;
  DeviceBuffer<int32_t> tok_, tgt_;
};

}  // namespace dipaco
