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

// Bytes [begin, begin + prefix) of a document's stream (its text, then a 0 byte).
struct FeatureWindow {
  const Document* doc;
  size_t begin = 0;
};


class FeatureModel {
 public:
  FeatureModel(Kernels& k, const ModelShape& s, Precision p, const std::vector<float>& params, int batch);
  // Collective over comm: the windows are split over its ranks; every rank gets all features [n, dim()].
  std::vector<float> features(const std::vector<FeatureWindow>& windows, int prefix, MPI_Comm comm);
  // This rank's windows only, no communication: [windows.size(), dim()].
  std::vector<float> local_features(const std::vector<FeatureWindow>& windows, int prefix);
  int dim() const { return shape_.C; }

 private:
  Kernels& k_;
  ModelShape shape_;
  Model model_;
  DeviceBuffer<float> params_;
  DeviceBuffer<int32_t> tok_, tgt_;
};

}  // namespace dipaco
