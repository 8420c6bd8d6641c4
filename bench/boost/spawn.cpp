// spawn: time and memory of N Boost.Context fibers, each run until it
// suspends. The Boost peer of bench/goro/spawn.c.
//
//   spawn -n N [-warm 1]
//
// A fiber is created with Boost's default fixedsize_stack (stack_traits::
// default_size(), 128 KiB from malloc, no guard page) and resumed at once;
// it counts itself and suspends back to main, which is its parked state.
// Boost has no scheduler, so this is the cheapest form of "spawn until
// parked". The clock runs from the first fiber until the last is
// suspended. The vector of fiber handles is reserved and touched before the
// first memory reading, so its pages are not in the delta. Teardown destroys
// the fibers, which unwinds each suspended fiber's stack; with -teardown 0
// (memory readings only) the process exits without it.
#include <boost/context/fiber.hpp>

#include <unistd.h>

#include "common.hpp"

namespace ctx = boost::context;

static long started;

struct round_result {
  double spawn_ns, teardown_ns, rss, rsspte;
};

// Creates n fibers and, with teardown set, destroys them again
// (teardown_ns is -1 otherwise).
static round_result one_round(long n, bool teardown) {
  std::vector<ctx::fiber> fibers(n);
  ctx::fixedsize_stack salloc;
  started = 0;
  mem m0 = read_mem();

  double t0 = now_ns();
  for (long i = 0; i < n; i++) {
    ctx::fiber f(std::allocator_arg, salloc, [](ctx::fiber &&main) {
      started++;
      main = std::move(main).resume(); // parked until destroyed
      return std::move(main);
    });
    fibers[i] = std::move(f).resume();
  }
  double t1 = now_ns();
  mem m1 = read_mem();
  if (started != n) {
    std::fprintf(stderr, "only %ld of %ld fibers ran\n", started, n);
    std::exit(1);
  }

  double N = double(n);
  double teardown_ns = -1;
  if (teardown) {
    double t2 = now_ns();
    fibers.clear();
    double t3 = now_ns();
    teardown_ns = (t3 - t2) / N;
  } else {
    // The handles must not be destroyed: the caller exits right away.
    new std::vector<ctx::fiber>(std::move(fibers));
  }
  return round_result{(t1 - t0) / N, teardown_ns, double(m1.rss - m0.rss) / N,
                      double(m1.rsspte - m0.rsspte) / N};
}

static void report(const std::string &prefix, const round_result &r) {
  result((prefix + "_ns").c_str(), r.spawn_ns);
  if (r.teardown_ns >= 0)
    result((prefix + "_teardown_ns").c_str(), r.teardown_ns);
  result((prefix + "_rss").c_str(), r.rss);
  result((prefix + "_rsspte").c_str(), r.rsspte);
}

int main(int argc, char **argv) {
  long n = long(flag_num(argc, argv, "n", 100000));
  bool warm = flag_num(argc, argv, "warm", 0) != 0;
  bool teardown = flag_num(argc, argv, "teardown", 1) != 0;

  std::printf("# boost spawn: N=%ld, fixedsize_stack of %zu bytes\n", n,
              ctx::stack_traits::default_size());
  report("cold", one_round(n, teardown || warm));
  if (!teardown && !warm)
    _exit(0);
  if (warm)
    report("warm", one_round(n, true));
  return 0;
}
