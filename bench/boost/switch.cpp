// switch: resume/yield round trips between main and one Boost.Context
// fiber, the Boost counterpart of a goroutine ping-pong. Boost has no
// scheduler and no channel, so this is the bare cost of two switches.
//
//   switch -n ROUNDTRIPS -reps R
#include <boost/context/fiber.hpp>

#include "common.hpp"

namespace ctx = boost::context;

static double measure(long n) {
  ctx::fiber f([](ctx::fiber &&main) {
    for (;;)
      main = std::move(main).resume();
    return std::move(main);
  });
  f = std::move(f).resume(); // the fiber runs before the clock starts

  double t0 = now_ns();
  for (long i = 0; i < n; i++)
    f = std::move(f).resume();
  double t1 = now_ns();
  return (t1 - t0) / double(n);
}

int main(int argc, char **argv) {
  long n = long(flag_num(argc, argv, "n", 10000000));
  int reps = int(flag_num(argc, argv, "reps", 5));
  std::vector<double> xs;

  std::printf("# boost switch: resume/yield round trips\n");
  measure(n / 10);
  for (int r = 0; r < reps; r++)
    xs.push_back(measure(n));
  result("roundtrip_ns", median(xs));
  return 0;
}
