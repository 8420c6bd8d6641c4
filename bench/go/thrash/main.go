// thrash: one long-lived worker goroutine fed deep and shallow tasks, with
// runtime.GC() after every task. The Go side of bench/goro/thrash.c.
//
//	thrash [-rounds 100] [-shallow 10] [-deep-kib 768]
//
// bench/run.py runs it twice, with GOMAXPROCS=1: with Go's default (the GC
// halves a stack that is less than a quarter used) and with
// GODEBUG=gcshrinkstackoff=1. A deep
// task recurses to deep-kib KiB of stack, so the stack doubles to 1 MiB; a
// shallow task recurses 4 levels. Each round is one deep task followed by
// `shallow` shallow tasks; 5 rounds warm up first. Tasks allocate nothing,
// so the only collections are the explicit ones.
//
// A stack copy is seen through a pointer into the worker's root frame,
// which the runtime rewrites whenever it moves the stack. After the last
// round the worker idles through 20 collections 10 ms apart; the program
// reports the VmRSS growth since before the worker started. Go's shrink
// frees the old stack to the heap, and the heap gives memory back to the
// OS through the background scavenger, not at once.
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"sort"
	"time"
	"unsafe"

	"gorobench/internal/benchutil"
)

// mover notices stack copies: root points into the worker's root frame.
type mover struct {
	root  *byte
	last  uintptr
	moves int
}

func (m *mover) check() {
	if a := uintptr(unsafe.Pointer(m.root)); a != m.last {
		m.moves++
		m.last = a
	}
}

//go:noinline
func recurse(d int, m *mover) byte {
	var buf [512]byte
	buf[d&511] = byte(d)
	m.check()
	if d == 0 {
		return buf[0]
	}
	return recurse(d-1, m) + buf[(d*7)&511] // not a tail call
}

type taskResult struct {
	ns      int64
	grew    bool // the stack moved during the task (a growth)
	shrinks int  // moves seen while parked before the task
}

func worker(tasks <-chan bool, results chan<- taskResult, deepDepth int) {
	var root byte
	m := mover{root: &root, last: uintptr(unsafe.Pointer(&root))}
	var sink byte
	for deep := range tasks {
		before := m.moves
		m.check()
		shrinks := m.moves - before
		before = m.moves
		depth := 4
		if deep {
			depth = deepDepth
		}
		t0 := time.Now()
		sink += recurse(depth, &m)
		el := time.Since(t0)
		results <- taskResult{el.Nanoseconds(), m.moves > before, shrinks}
	}
	_ = sink
}

// quantile returns the p-quantile of sorted xs by the nearest-rank rule.
func quantile(xs []float64, p float64) float64 {
	i := int(p*float64(len(xs))+0.5) - 1
	if i < 0 {
		i = 0
	}
	if i >= len(xs) {
		i = len(xs) - 1
	}
	return xs[i]
}

func main() {
	rounds := flag.Int("rounds", 100, "rounds (deep tasks) measured")
	shallow := flag.Int("shallow", 10, "shallow tasks after each deep task")
	deepKiB := flag.Int("deep-kib", 768, "stack a deep task uses, KiB")
	flag.Parse()

	deepDepth := *deepKiB * 1024 / 544 // 544 stack bytes per level, see growth/
	fmt.Printf("# go thrash: %s, GOMAXPROCS=%d, GODEBUG=%q\n", runtime.Version(), runtime.GOMAXPROCS(0), os.Getenv("GODEBUG"))
	tasks, results := make(chan bool), make(chan taskResult)
	runtime.GC()
	base := benchutil.ReadMem()
	go worker(tasks, results, deepDepth)
	run := func(deep bool) taskResult {
		tasks <- deep
		r := <-results
		runtime.GC()
		return r
	}

	for i := 0; i < 5; i++ {
		run(true)
		for j := 0; j < *shallow; j++ {
			run(false)
		}
	}

	var deepUs []float64
	grew, shrinks := 0, 0
	t0 := time.Now()
	for i := 0; i < *rounds; i++ {
		r := run(true)
		deepUs = append(deepUs, float64(r.ns)/1e3)
		if r.grew {
			grew++
		}
		shrinks += r.shrinks
		for j := 0; j < *shallow; j++ {
			shrinks += run(false).shrinks
		}
	}
	wallMs := float64(time.Since(t0).Nanoseconds()) / 1e6

	for i := 0; i < 20; i++ {
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	idle := benchutil.ReadMem()
	close(tasks)

	sort.Float64s(deepUs)
	benchutil.Result("deep_p50_us", quantile(deepUs, 0.50))
	benchutil.Result("deep_p99_us", quantile(deepUs, 0.99))
	benchutil.Result("deep_max_us", deepUs[len(deepUs)-1])
	benchutil.Result("deep_grew_share", float64(grew)/float64(*rounds))
	benchutil.Result("shrinks_per_round", float64(shrinks)/float64(*rounds))
	benchutil.Result("rss_idle_kib", float64(idle.RSS-base.RSS)/1024)
	benchutil.Result("wall_ms", wallMs)
}
