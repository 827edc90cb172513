/* Counts the collectives each rank calls, per communicator (by the name dipaco
 * gives it: "dipaco path", "dipaco module", MPI_COMM_WORLD, else "other") and
 * per stretch: between two outer-round boundaries or at one, as dipaco marks
 * them with MPI_Pcontrol(10) and MPI_Pcontrol(11); "dipaco stop" is the
 * non-blocking stop agreement (dist/stop_agreement.hpp). A profiling library of the
 * MPI standard's kind (LD_PRELOAD; the program is not rebuilt). At MPI_Finalize
 * each rank writes $DIPACO_COLLECTIVES_DIR/rank-<r>.txt: lines of
 * "<between|boundary> <world|module|path|other> <calls>" and "stretches <n>",
 * and "module_sent_bytes <n>": the bytes of point-to-point sends on module
 * communicators (the compressed outer gradients' ring). */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { WORLD, MODULE, PATH, STOP, OTHER, NCLASS };
static const char* class_names[NCLASS] = {"world", "module", "path", "stop", "other"};
static long calls[2][NCLASS];
static int between = 0; /* 1 between MPI_Pcontrol(10) and MPI_Pcontrol(11) */
static long stretches = 0; /* MPI_Pcontrol(10) calls */

static int comm_class(MPI_Comm c) {
  int same;
  PMPI_Comm_compare(c, MPI_COMM_WORLD, &same);
  if (same == MPI_IDENT) return WORLD;
  char name[MPI_MAX_OBJECT_NAME] = "";
  int len = 0;
  PMPI_Comm_get_name(c, name, &len);
  if (strcmp(name, "dipaco module") == 0) return MODULE;
  if (strcmp(name, "dipaco path") == 0) return PATH;
  if (strcmp(name, "dipaco stop") == 0) return STOP;
  return OTHER;
}
static void note(MPI_Comm c) { calls[between][comm_class(c)]++; }
static long long module_sent_bytes = 0;
static void note_send(int n, MPI_Datatype t, MPI_Comm c) {
  int size = 0;
  PMPI_Type_size(t, &size);
  if (comm_class(c) == MODULE) module_sent_bytes += (long long)n * size;
}

int MPI_Isend(const void* b, int n, MPI_Datatype t, int dest, int tag, MPI_Comm c, MPI_Request* q) {
  note_send(n, t, c);
  return PMPI_Isend(b, n, t, dest, tag, c, q);
}
int MPI_Send(const void* b, int n, MPI_Datatype t, int dest, int tag, MPI_Comm c) {
  note_send(n, t, c);
  return PMPI_Send(b, n, t, dest, tag, c);
}

int MPI_Pcontrol(const int level, ...) {
  if (level == 10) {
    between = 1;
    stretches++;
  }
  if (level == 11) between = 0;
  return MPI_SUCCESS;
}

int MPI_Allreduce(const void* s, void* r, int n, MPI_Datatype t, MPI_Op op, MPI_Comm c) {
  note(c);
  return PMPI_Allreduce(s, r, n, t, op, c);
}
int MPI_Iallreduce(const void* s, void* r, int n, MPI_Datatype t, MPI_Op op, MPI_Comm c, MPI_Request* q) {
  note(c);
  return PMPI_Iallreduce(s, r, n, t, op, c, q);
}
int MPI_Allgather(const void* s, int sn, MPI_Datatype st, void* r, int rn, MPI_Datatype rt, MPI_Comm c) {
  note(c);
  return PMPI_Allgather(s, sn, st, r, rn, rt, c);
}
int MPI_Bcast(void* b, int n, MPI_Datatype t, int root, MPI_Comm c) {
  note(c);
  return PMPI_Bcast(b, n, t, root, c);
}
int MPI_Barrier(MPI_Comm c) {
  note(c);
  return PMPI_Barrier(c);
}
int MPI_Ibarrier(MPI_Comm c, MPI_Request* q) {
  note(c);
  return PMPI_Ibarrier(c, q);
}
int MPI_Reduce(const void* s, void* r, int n, MPI_Datatype t, MPI_Op op, int root, MPI_Comm c) {
  note(c);
  return PMPI_Reduce(s, r, n, t, op, root, c);
}
int MPI_Gather(const void* s, int sn, MPI_Datatype st, void* r, int rn, MPI_Datatype rt, int root, MPI_Comm c) {
  note(c);
  return PMPI_Gather(s, sn, st, r, rn, rt, root, c);
}

int MPI_Finalize(void) {
  const char* dir = getenv("DIPACO_COLLECTIVES_DIR");
  int rank;
  PMPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/rank-%d.txt", dir, rank);
    FILE* f = fopen(path, "w");
    if (f) {
      fprintf(f, "stretches %ld\n", stretches);
      fprintf(f, "module_sent_bytes %lld\n", module_sent_bytes);
      for (int b = 1; b >= 0; --b)
        for (int k = 0; k < NCLASS; ++k) fprintf(f, "%s %s %ld\n", b ? "between" : "boundary", class_names[k], calls[b][k]);
      fclose(f);
    }
  }
  return PMPI_Finalize();
}
