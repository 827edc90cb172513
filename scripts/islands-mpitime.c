/* Time spent inside MPI collectives and point-to-point calls, per rank, through the MPI profiling
 * interface (LD_PRELOAD; the program is not rebuilt). At MPI_Finalize each rank
 * writes $ISLANDS_MPITIME_DIR/rank-<r>.json with seconds and calls per
 * collective. Used by scripts/islands-bench for the communication share of every
 * variant, including data-parallel runs whose per-step all-reduce dipaco's own
 * sync_seconds does not cover.
 *   mpicc -O2 -shared -fPIC -o libislands-mpitime.so islands-mpitime.c */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

// p2p: the sends, receives, tests and waits of dipaco's ring of compressed outer gradients.
enum { ALLREDUCE, ALLGATHER, BCAST, BARRIER, P2P, NOPS };
static const char* names[NOPS] = {"allreduce", "allgather", "bcast", "barrier", "p2p"};
static double secs[NOPS], bytes[NOPS];
static long calls[NOPS];
static double t_init;

static double bytes_of(int n, MPI_Datatype t) {
  int size;
  PMPI_Type_size(t, &size);
  return (double)n * size;
}

static void note(int op, double t0, double b) {
  secs[op] += MPI_Wtime() - t0;
  bytes[op] += b;
  calls[op]++;
}

int MPI_Init_thread(int* argc, char*** argv, int required, int* provided) {
  int rc = PMPI_Init_thread(argc, argv, required, provided);
  t_init = MPI_Wtime();
  return rc;
}

int MPI_Init(int* argc, char*** argv) {
  int rc = PMPI_Init(argc, argv);
  t_init = MPI_Wtime();
  return rc;
}

int MPI_Allreduce(const void* s, void* r, int n, MPI_Datatype t, MPI_Op op, MPI_Comm c) {
  double t0 = MPI_Wtime();
  int rc = PMPI_Allreduce(s, r, n, t, op, c);
  note(ALLREDUCE, t0, bytes_of(n, t));
  return rc;
}

int MPI_Allgather(const void* s, int sn, MPI_Datatype st, void* r, int rn, MPI_Datatype rt, MPI_Comm c) {
  double t0 = MPI_Wtime();
  int rc = PMPI_Allgather(s, sn, st, r, rn, rt, c);
  note(ALLGATHER, t0, bytes_of(sn, st));
  return rc;
}

int MPI_Bcast(void* b, int n, MPI_Datatype t, int root, MPI_Comm c) {
  double t0 = MPI_Wtime();
  int rc = PMPI_Bcast(b, n, t, root, c);
  note(BCAST, t0, bytes_of(n, t));
  return rc;
}

int MPI_Barrier(MPI_Comm c) {
  double t0 = MPI_Wtime();
  int rc = PMPI_Barrier(c);
  note(BARRIER, t0, 0);
  return rc;
}

int MPI_Isend(const void* b, int n, MPI_Datatype t, int dest, int tag, MPI_Comm c, MPI_Request* r) {
  double t0 = MPI_Wtime();
  int rc = PMPI_Isend(b, n, t, dest, tag, c, r);
  note(P2P, t0, bytes_of(n, t));
  return rc;
}

int MPI_Irecv(void* b, int n, MPI_Datatype t, int src, int tag, MPI_Comm c, MPI_Request* r) {
  double t0 = MPI_Wtime();
  int rc = PMPI_Irecv(b, n, t, src, tag, c, r);
  note(P2P, t0, 0);
  return rc;
}

int MPI_Testall(int n, MPI_Request* r, int* flag, MPI_Status* st) {
  double t0 = MPI_Wtime();
  int rc = PMPI_Testall(n, r, flag, st);
  note(P2P, t0, 0);
  return rc;
}

int MPI_Waitall(int n, MPI_Request* r, MPI_Status* st) {
  double t0 = MPI_Wtime();
  int rc = PMPI_Waitall(n, r, st);
  note(P2P, t0, 0);
  return rc;
}

int MPI_Finalize(void) {
  const char* dir = getenv("ISLANDS_MPITIME_DIR");
  if (dir) {
    int rank;
    PMPI_Comm_rank(MPI_COMM_WORLD, &rank);
    char path[4096];
    snprintf(path, sizeof path, "%s/rank-%d.json", dir, rank);
    FILE* f = fopen(path, "w");
    if (f) {
      fprintf(f, "{\"rank\":%d,\"seconds_since_init\":%.6f", rank, MPI_Wtime() - t_init);
      for (int i = 0; i < NOPS; ++i)
        fprintf(f, ",\"%s\":{\"seconds\":%.6f,\"calls\":%ld,\"bytes\":%.0f}", names[i], secs[i], calls[i], bytes[i]);
      fprintf(f, "}\n");
      fclose(f);
    }
  }
  return PMPI_Finalize();
}
