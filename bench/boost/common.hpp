// bench/boost/common.hpp: the helpers of bench/common.h for the C++ peers.
// The result lines and flags are spelled as in the C and Go programs.
#ifndef GORO_BENCH_BOOST_COMMON_HPP
#define GORO_BENCH_BOOST_COMMON_HPP

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

inline double now_ns() {
  return std::chrono::duration<double, std::nano>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Returns a "Name:   N kB" field of /proc/self/status in bytes.
inline long long status_bytes(const char *field) {
  std::ifstream f("/proc/self/status");
  std::string line, prefix = std::string(field) + ":";
  while (std::getline(f, line))
    if (line.compare(0, prefix.size(), prefix) == 0)
      return std::stoll(line.substr(prefix.size())) * 1024;
  std::fprintf(stderr, "field %s not found in /proc/self/status\n", field);
  std::exit(1);
}

struct mem {
  long long rss, rsspte;
};

inline mem read_mem() {
  long long rss = status_bytes("VmRSS");
  return mem{rss, rss + status_bytes("VmPTE")};
}

inline double flag_num(int argc, char **argv, const char *name, double def) {
  for (int i = 1; i + 1 < argc; i++) {
    if (argv[i][0] != '-' || std::strcmp(argv[i] + 1, name) != 0)
      continue;
    char *end;
    double v = std::strtod(argv[i + 1], &end);
    if (end == argv[i + 1] || *end) {
      std::fprintf(stderr, "invalid number for -%s: %s\n", name, argv[i + 1]);
      std::exit(2);
    }
    return v;
  }
  return def;
}

inline void result(const char *key, double value) {
  std::printf("result %s %.6g\n", key, value);
  std::fflush(stdout);
}

inline double median(std::vector<double> xs) {
  std::sort(xs.begin(), xs.end());
  size_t n = xs.size();
  return n % 2 ? xs[n / 2] : (xs[n / 2 - 1] + xs[n / 2]) / 2;
}

#endif
