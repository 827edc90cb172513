// The pipeline behind `dipaco run DECK`: prepare -> warm start -> route ->
// train -> evaluate. Each stage's output carries a stamp (the deck values the
// stage depends on, upstream stages' included); a stage whose output exists
// with a matching stamp is skipped, so the same command resumes, and a changed
// value re-runs exactly the stages that depend on it.
#pragma once
#include <map>
#include <string>

#include "dipaco/io/deck.hpp"

namespace dipaco {

using Stage = DeckStage;  // the registry says which stage each key belongs to (io/deck.hpp)

// "key = value" lines of the deck values a stage depends on (sorted), plus extra lines.
std::string stage_stamp(const Deck& deck, Stage s, const std::string& extra = "");
// Keys whose values differ between two stamps ("key: old -> new").
std::string stamp_changes(const std::string& before, const std::string& now);

// Runs the pipeline on MPI_COMM_WORLD; returns an exit code.
int run_pipeline(const Deck& deck, int rank, int size);

}  // namespace dipaco
