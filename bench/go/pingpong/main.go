// pingpong: round trips between two goroutines over two unbuffered
// channels. The Go side of bench/goro/pingpong.c.
//
//	pingpong -n ROUNDTRIPS -reps R     (set GOMAXPROCS in the environment)
//
// One round trip: main sends on a, the partner receives it and sends it
// back on b, main receives: two hand-offs. The program prints the median
// of R measurements of n round trips each, after a warm-up of n/10.
package main

import (
	"flag"
	"fmt"
	"runtime"
	"time"

	"gorobench/internal/benchutil"
)

func measure(n int) float64 {
	a, b := make(chan int), make(chan int)
	go func() {
		for v := range a {
			b <- v
		}
	}()
	a <- 0 // the partner is running before the clock starts
	<-b

	t0 := time.Now()
	for i := 0; i < n; i++ {
		a <- i
		<-b
	}
	el := time.Since(t0)
	close(a)
	return float64(el.Nanoseconds()) / float64(n)
}

func main() {
	n := flag.Int("n", 1000000, "round trips per measurement")
	reps := flag.Int("reps", 5, "measurements")
	flag.Parse()

	fmt.Printf("# go pingpong: %s, GOMAXPROCS=%d\n", runtime.Version(), runtime.GOMAXPROCS(0))
	measure(*n / 10)
	var xs []float64
	for r := 0; r < *reps; r++ {
		xs = append(xs, measure(*n))
	}
	benchutil.Result("roundtrip_ns", benchutil.Median(xs))
}
