// spawn: time and memory of N goroutines that each block on a channel
// receive, then the time to release them. The Go side of bench/goro/spawn.c.
//
//	spawn -n N [-warm 1]
//
// Each goroutine marks itself ready on a WaitGroup and parks receiving from
// an unbuffered channel that no goroutine sends to. The clock runs from the first `go`
// statement until the last goroutine is parked. VmRSS and VmPTE are read
// just before the first `go` and when all are parked. The GC is off from
// the first spawn until after teardown (debug.SetGCPercent(-1)), so the
// numbers hold the goroutines and not a collection their allocation starts;
// goro has no collector to switch off.
//
// With -warm 1 a second round runs in the same process after the first
// one's teardown and a runtime.GC(), so goroutine descriptors and stacks
// come from the runtime's free lists. With -teardown 0 (memory readings
// only) the process exits as soon as all goroutines are parked and measured.
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"sync"
	"time"

	"gorobench/internal/benchutil"
)

// Package-level state, so that `go waiter()` captures nothing and allocates
// nothing besides the goroutine itself.
var (
	gate        chan struct{}
	ready, done sync.WaitGroup
)

func waiter() {
	ready.Done()
	<-gate
	done.Done()
}

type roundResult struct {
	spawnNs, teardownNs float64
	rss, rssPTE         float64 // per goroutine, bytes
	stackInuse          float64 // MemStats.StackInuse delta per goroutine, bytes
}

// oneRound spawns n waiters and, with teardown set, releases them again
// (teardownNs is -1 otherwise).
func oneRound(n int, teardown bool) roundResult {
	gate = make(chan struct{})
	ready.Add(n)
	done.Add(n)
	runtime.GC()
	debug.SetGCPercent(-1)
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	m0 := benchutil.ReadMem()

	t0 := time.Now()
	for i := 0; i < n; i++ {
		go waiter()
	}
	ready.Wait()
	t1 := time.Now()

	m1 := benchutil.ReadMem()
	runtime.ReadMemStats(&ms1)

	N := float64(n)
	teardownNs := -1.0
	if teardown {
		t2 := time.Now()
		close(gate)
		done.Wait()
		t3 := time.Now()
		debug.SetGCPercent(100)
		teardownNs = float64(t3.Sub(t2).Nanoseconds()) / N
	}

	return roundResult{
		spawnNs:    float64(t1.Sub(t0).Nanoseconds()) / N,
		teardownNs: teardownNs,
		rss:        float64(m1.RSS-m0.RSS) / N,
		rssPTE:     float64(m1.RSSPTE-m0.RSSPTE) / N,
		stackInuse: (float64(ms1.StackInuse) - float64(ms0.StackInuse)) / N,
	}
}

func report(prefix string, r roundResult) {
	benchutil.Result(prefix+"_ns", r.spawnNs)
	if r.teardownNs >= 0 {
		benchutil.Result(prefix+"_teardown_ns", r.teardownNs)
	}
	benchutil.Result(prefix+"_rss", r.rss)
	benchutil.Result(prefix+"_rsspte", r.rssPTE)
	benchutil.Result(prefix+"_stack_inuse", r.stackInuse)
}

func main() {
	n := flag.Int("n", 100000, "goroutines to spawn")
	warm := flag.Int("warm", 0, "1: run a second round in the same process")
	teardown := flag.Int("teardown", 1, "0: exit once the goroutines are parked and measured")
	flag.Parse()

	fmt.Printf("# go spawn: %s, N=%d, GOMAXPROCS=%d\n", runtime.Version(), *n, runtime.GOMAXPROCS(0))
	report("cold", oneRound(*n, *teardown != 0 || *warm != 0))
	if *teardown == 0 && *warm == 0 {
		os.Exit(0)
	}
	if *warm != 0 {
		runtime.GC()
		report("warm", oneRound(*n, true))
	}
}
