// Items in batches of a fixed size: the model always runs a full batch, so the
// last batch repeats its last item in the slots it does not fill.
#pragma once
#include <algorithm>
#include <cstddef>

namespace dipaco {

// For each batch: fill(slot, item) for every slot in [0, B), then
// done(first, used) with the batch's first item and its number of real items.
template <class Fill, class Done>
void padded_batches(size_t n, int B, Fill&& fill, Done&& done) {
  for (size_t first = 0; first < n; first += size_t(B)) {
    const size_t used = std::min<size_t>(size_t(B), n - first);
    for (size_t b = 0; b < size_t(B); ++b) fill(b, first + std::min(b, used - 1));
    done(first, used);
  }
}

}  // namespace dipaco
