// Factorised routing: a flat k-means of P clusters placed on the product grid
// of the topology, so that the paths sharing a module hold clusters that are
// near each other. Path p's level-l module is its l-th grid coordinate (level 0
// most significant, as in the topology); a module's members are the P / M_l
// cells that agree on that coordinate. The placement minimises the sum, over
// every level and module, of its members' squared distances to their mean, by
// pairwise swaps from a few seeded starts. The result is a flat router whose
// row p is the centroid of the cluster placed on path p, so routing, shards,
// exports and inference read it like any flat router.
#pragma once
#include <cstdint>
#include <vector>

namespace dipaco {

// Sum over levels and modules of the members' squared distances to their mean,
// for centroids [P, dim] with centroid order[p] on path p.
double module_scatter(const std::vector<float>& centroids, int dim, const std::vector<int>& modules_per_level,
                      const std::vector<int>& order);

// The placement: order[p] = the cluster on path p (a permutation of 0..P-1).
std::vector<int> factorise(const std::vector<float>& centroids, int dim, const std::vector<int>& modules_per_level,
                           uint64_t seed);

}  // namespace dipaco
