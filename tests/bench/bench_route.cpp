// Times the route stage's work on synthetic prefix features: the k-means fit
// (every rank fits the same router on the route.fit_docs sample), the path
// scores (each rank its block of documents; here all on one) and the capped
// assignment (rank 0, when a cap binds). A rank's peak memory is printed with it.
// --balance: the windows router's balance (segment shards) instead, N windows
// of one rank on a flat router of P paths, its scores held up to the default
// bound and then all of them: the time and memory of each, the same offsets.
//   dipaco_bench_route [--docs N] [--dim C] [--levels 16,16] [--iters I] [--routing product|flat|residual]
//                      [--max-fraction F] [--balance 1]
#include <mpi.h>
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "dipaco/data/router.hpp"
#include "dipaco/data/window_router.hpp"

using namespace dipaco;

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double peak_rss_mb() {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss / 1024.0;
}

// The balance twice on the same windows: the default bound on its scores, then none.
int bench_balance(const std::vector<float>& f, const std::vector<float>& centre, int dim, int P) {
  Router r;
  r.mode = "flat", r.dim = dim, r.modules_per_level = {P};
  r.centroids.assign(1, std::vector<float>(centre.begin(), centre.begin() + long(P) * dim));
  const std::vector<double> target(size_t(P), 1.0);
  const size_t n = f.size() / size_t(dim);
  std::printf("balance: %zu windows x %d features, %d paths: all scores %.0f MB, held up to %zu MB\n", n, dim, P,
              double(n) * P * sizeof(double) / 1e6, kBalanceTableBytes >> 20);
  Router bounded = r, whole = r;
  auto t0 = std::chrono::steady_clock::now();
  const double off_bounded = balance_router(bounded, f, {}, target, MPI_COMM_SELF).off;
  const double t_bounded = seconds_since(t0), rss_bounded = peak_rss_mb();
  t0 = std::chrono::steady_clock::now();
  const double off_whole = balance_router(whole, f, {}, target, MPI_COMM_SELF, {}, SIZE_MAX).off;
  const double t_whole = seconds_since(t0);
  const bool same = bounded.offsets == whole.offsets && off_bounded == off_whole;
  std::printf("bounded: %.1f s, peak RSS %.0f MB | all held: %.1f s, peak RSS %.0f MB | bounded / all held: %.2fx time | "
              "largest share off %.3f, offsets %s\n",
              t_bounded, rss_bounded, t_whole, peak_rss_mb(), t_bounded / t_whole, off_bounded, same ? "the same" : "DIFFER");
  return same ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  size_t docs = 1000000;
  int dim = 128, iters = 100;
  double max_fraction = 0.08;
  std::vector<int> levels = {16, 16};
  std::string routing = "product";
  bool balance = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) {
      std::fprintf(stderr, "dipaco_bench_route: %s needs a value\n", a.c_str());
      return 2;
    }
    const std::string v = argv[++i];
    if (a == "--docs") docs = std::stoull(v);
    else if (a == "--dim") dim = std::stoi(v);
    else if (a == "--iters") iters = std::stoi(v);
    else if (a == "--routing" && choice_of<Routing>(v)) routing = v;
    else if (a == "--max-fraction") max_fraction = std::stod(v);
    else if (a == "--balance") balance = v != "0";
    else if (a == "--levels") {
      levels.clear();
      std::istringstream s(v);
      for (std::string t; std::getline(s, t, ',');) levels.push_back(std::stoi(t));
    } else {
      std::fprintf(stderr, "dipaco_bench_route: unknown option %s\n", a.c_str());
      return 2;
    }
  }
  int P = 1;
  for (int k : levels) P *= k;
  // Features around 4P random centres (documents are not uniform in real corpora either).
  auto t0 = std::chrono::steady_clock::now();
  std::mt19937_64 rng(7);
  std::normal_distribution<float> g(0.f, 1.f);
  const int centres = 4 * P;
  std::vector<float> centre(size_t(centres) * dim), f(docs * dim);
  for (auto& x : centre) x = 3.f * g(rng);
  std::uniform_int_distribution<int> pick(0, centres - 1);
  for (size_t i = 0; i < docs; ++i) {
    const float* c = &centre[size_t(pick(rng)) * dim];
    for (int j = 0; j < dim; ++j) f[i * dim + j] = c[j] + g(rng);
  }
  const double t_synth = seconds_since(t0);
  if (balance) {
    MPI_Init(&argc, &argv);
    const int rc = bench_balance(f, centre, dim, P);
    MPI_Finalize();
    return rc;
  }
  std::printf("%zu documents x %d features, %d paths (%s), %d Lloyd iterations at most, %d starts\n", docs, dim, P,
              routing.c_str(), iters, kKMeansStarts);
  t0 = std::chrono::steady_clock::now();
  Router r = fit_router(f, dim, levels, *choice_of<Routing>(routing), 1234, iters);
  const double t_fit = seconds_since(t0);
  t0 = std::chrono::steady_clock::now();
  std::vector<double> scores(docs * P);
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < docs; ++i) r.path_scores(&f[i * dim], &scores[i * P]);
  const double t_scores = seconds_since(t0);
  t0 = std::chrono::steady_clock::now();
  auto paths = assign_paths(scores, docs, P, max_fraction, 1);
  const double t_assign = seconds_since(t0);
  std::printf("synthesis %.1f s | k-means fit %.1f s | path scores %.1f s (%.0f MB) | assignment %.1f s | peak RSS %.0f MB\n",
              t_synth, t_fit, t_scores, scores.size() * sizeof(double) / 1e6, t_assign, peak_rss_mb());
  return paths.size() == docs ? 0 : 1;
}
