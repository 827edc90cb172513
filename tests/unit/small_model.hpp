// A model small enough for exact comparisons, with two levels (1 and 2 blocks).
#pragma once
#include "dipaco/model/model.hpp"

inline dipaco::ModelShape small_two_level_shape() {
  dipaco::ModelShape s;
  s.V = 256, s.C = 16, s.L = 3, s.H = 2, s.T = 8, s.layers_per_level = {1, 2};
  return s;
}
