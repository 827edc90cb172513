// Stage stamps: the "key = value" lines (io/key_lines) that say what made a
// stage's output. A stamp kept with an output still holds when the stamp of
// now differs from it only by deck keys added to dipaco since it was written,
// at their defaults: an upgrade does not redo finished stages.
#pragma once
#include <string>

namespace dipaco {

bool same_stamp(const std::string& kept, const std::string& now);

}  // namespace dipaco
