// growth: the cost of growing a goroutine stack from Go's 2 KiB start to
// 8 KiB, 64 KiB, 1 MiB and 16 MiB. The Go side of bench/goro/growth.c.
//
//	growth -reps R     (bench/run.py sets GOMAXPROCS=1, as for goro)
//
// A fresh goroutine calls deep(), a recursion whose frames hold a 512-byte
// array, to a depth that uses 75% of the target size. The first call grows
// the stack: morestack, then a copy to a stack twice as large, once per
// doubling. The second identical call finds it large enough. First minus
// second is the growth cost.
//
// cold: runtime.GC() before every trial, so the stacks freed by earlier
// trials have gone back to the heap and the stack caches are empty. warm:
// no GC between trials and one discarded warm-up trial per size, so the
// runtime holds resident stack memory of every size the trial needs.
package main

import (
	"flag"
	"fmt"
	"runtime"
	"time"
	"unsafe"

	"gorobench/internal/benchutil"
)

var deepest uintptr // address of buf in the frame at depth 0

//go:noinline
func deep(d int) byte {
	var buf [512]byte
	buf[d&511] = byte(d)
	if d == 0 {
		deepest = uintptr(unsafe.Pointer(&buf))
		return buf[0]
	}
	return deep(d-1) + buf[(d*7)&511] // not a tail call
}

var sink byte

type trial struct {
	first, second time.Duration
	used          uintptr // bytes from the goroutine's entry frame to the deepest buf
}

func oneTrial(depth int) trial {
	var t trial
	done := make(chan struct{})
	go func() {
		var root byte
		t0 := time.Now()
		sink += deep(depth)
		t1 := time.Now()
		sink += deep(depth)
		t2 := time.Now()
		t.first, t.second = t1.Sub(t0), t2.Sub(t1)
		// The stack may have moved during the calls; both addresses are
		// read now, on the stack as it is after the growth.
		t.used = uintptr(unsafe.Pointer(&root)) - deepest
		close(done)
	}()
	<-done
	return t
}

func us(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }

func main() {
	reps := flag.Int("reps", 5, "trials per size and mode")
	flag.Parse()

	// Bytes of stack per deep() level, from a throw-away trial.
	runtime.GC()
	frame := float64(oneTrial(200).used) / 201
	fmt.Printf("# go growth: %s, GOMAXPROCS=%d, %.1f stack bytes per level, %d trials per size\n",
		runtime.Version(), runtime.GOMAXPROCS(0), frame, *reps)
	benchutil.Result("frame_bytes", frame)

	targets := []struct {
		key   string
		bytes int
	}{{"8k", 8 << 10}, {"64k", 64 << 10}, {"1m", 1 << 20}, {"16m", 16 << 20}}
	for _, mode := range []string{"cold", "warm"} {
		for _, target := range targets {
			depth := int(0.75 * float64(target.bytes) / frame)
			if mode == "warm" {
				oneTrial(depth)
			}
			var first, second, diff []float64
			for r := 0; r < *reps; r++ {
				if mode == "cold" {
					runtime.GC()
				}
				t := oneTrial(depth)
				first = append(first, us(t.first))
				second = append(second, us(t.second))
				diff = append(diff, us(t.first)-us(t.second))
			}
			prefix := mode + "_" + target.key
			benchutil.Result(prefix+"_first_us", benchutil.Median(first))
			benchutil.Result(prefix+"_second_us", benchutil.Median(second))
			benchutil.Result(prefix+"_us", benchutil.Median(diff))
		}
	}
}
