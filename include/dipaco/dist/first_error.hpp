// Ranks that may fail apart agree on one message: the lowest failing rank's
// own words reach every rank, so whoever prints says what really failed.
#pragma once
#include <mpi.h>

#include <string>

namespace dipaco {

// Collective over comm: the message of the lowest rank whose `mine` is not
// empty, on every rank ("" when no rank failed).
std::string first_error(const std::string& mine, MPI_Comm comm);

}  // namespace dipaco
