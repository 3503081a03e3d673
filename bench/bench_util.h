// Small measuring helpers the benchmarks share.
#ifndef DCVLR_BENCH_BENCH_UTIL_H_
#define DCVLR_BENCH_BENCH_UTIL_H_

#include <time.h>

#include <algorithm>
#include <cstddef>
#include <vector>

namespace dcvlr::bench {

// This thread's CPU time in ms: on a shared machine, what the work cost
// without the time other processes held the core.
inline double ThreadCpuMs() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

// The value at fraction `p` (0..1) of the sorted values; 0 for none.
inline double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * v.size()))];
}

}  // namespace dcvlr::bench

#endif  // DCVLR_BENCH_BENCH_UTIL_H_
