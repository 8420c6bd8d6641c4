// alloc: what one allocation costs in Go, on the stack, on the heap and
// from a sync.Pool, in ns per operation. The Go column of the table that
// bench/goro/alloc.c fills for C and goro.
//
//	alloc -n OPS -reps R -fresh K      (bench/run.py sets GOMAXPROCS=1)
//
//	stack{64,4k}     call of a function whose frame has a 64-byte or
//	                 4 KiB array (Go zeroes it; a byte is written at each
//	                 end and one is read, as in the C program)
//	grow4k_fresh     the first call of that 4 KiB function on a new
//	                 goroutine, which starts with 2 KiB of stack and must
//	                 grow (morestack, copy): K goroutines, each timing its
//	                 own first call and then staying parked
//	grow4k_recycled  the same, but each goroutine exits before the next
//	                 starts
//	heap{64,4k}      make([]byte, size) stored to a global, so that it
//	                 escapes to the heap; the GC's cost is amortized in
//	sync_pool{64,4k} sync.Pool Get + Put of a *[size]byte
//
// Each figure is the median of R runs of n operations, or of n/100 for the
// 4 KiB heap figure. The grow4k figures are medians over K goroutines.
package main

import (
	"flag"
	"fmt"
	"runtime"
	"sync"
	"time"

	"gorobench/internal/benchutil"
)

var (
	sink     byte
	heapSink []byte
)

//go:noinline
func frame64(i int) byte {
	var buf [64]byte
	buf[0] = byte(i)
	buf[63] = byte(i)
	return buf[(i*7)&63]
}

//go:noinline
func frame4k(i int) byte {
	var buf [4096]byte
	buf[0] = byte(i)
	buf[4095] = byte(i)
	return buf[(i*7)&4095]
}

func timeOp(key string, n, reps int, op func(n int)) {
	op(n / 10) // warm-up
	var xs []float64
	for r := 0; r < reps; r++ {
		t0 := time.Now()
		op(n)
		xs = append(xs, float64(time.Since(t0).Nanoseconds())/float64(n))
	}
	benchutil.Result(key, benchutil.Median(xs))
}

// timeFirstCalls times the first 4 KiB frame of k new goroutines. With keep
// set they stay parked until all are measured; otherwise each exits before
// the next starts.
func timeFirstCalls(key string, k int, keep bool) {
	ns := make([]float64, k)
	hold := make(chan struct{})
	for i := 0; i < k; i++ {
		measured := make(chan struct{})
		go func(i int) {
			t0 := time.Now()
			sink += frame4k(i)
			ns[i] = float64(time.Since(t0).Nanoseconds())
			close(measured)
			if keep {
				<-hold
			}
		}(i)
		<-measured
		runtime.Gosched() // with GOMAXPROCS=1 the goroutine has exited or parked now
	}
	close(hold)
	benchutil.Result(key, benchutil.Median(ns))
}

func main() {
	n := flag.Int("n", 5000000, "operations per run")
	reps := flag.Int("reps", 3, "runs per figure")
	fresh := flag.Int("fresh", 2000, "new goroutines for the grow4k figures")
	flag.Parse()

	fmt.Printf("# go alloc: %s, GOMAXPROCS=%d, %d operations x %d runs, %d fresh goroutines\n",
		runtime.Version(), runtime.GOMAXPROCS(0), *n, *reps, *fresh)
	timeOp("stack64_ns", *n, *reps, func(n int) {
		for i := 0; i < n; i++ {
			sink += frame64(i)
		}
	})
	timeOp("stack4k_ns", *n, *reps, func(n int) {
		for i := 0; i < n; i++ {
			sink += frame4k(i)
		}
	})
	timeFirstCalls("grow4k_recycled_ns", *fresh, false)
	timeFirstCalls("grow4k_fresh_ns", *fresh, true)

	// Heap allocations of 4 KiB run n/100 times: each takes microseconds.
	for _, size := range []struct {
		suffix  string
		bytes   int
		divisor int
	}{{"64", 64, 1}, {"4k", 4096, 100}} {
		bytes := size.bytes
		timeOp("heap"+size.suffix+"_ns", *n/size.divisor, *reps, func(n int) {
			for i := 0; i < n; i++ {
				b := make([]byte, bytes)
				b[0] = byte(i)
				heapSink = b
			}
		})
		var pool sync.Pool
		if bytes == 64 {
			pool.New = func() any { return new([64]byte) }
			timeOp("sync_pool64_ns", *n, *reps, func(n int) {
				for i := 0; i < n; i++ {
					b := pool.Get().(*[64]byte)
					b[0] = byte(i)
					pool.Put(b)
				}
			})
		} else {
			pool.New = func() any { return new([4096]byte) }
			timeOp("sync_pool4k_ns", *n, *reps, func(n int) {
				for i := 0; i < n; i++ {
					b := pool.Get().(*[4096]byte)
					b[0] = byte(i)
					pool.Put(b)
				}
			})
		}
	}
}
