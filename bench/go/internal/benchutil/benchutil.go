// Package benchutil contains what the Go benchmark programs share: the result
// line format that bench/run.py reads, memory readings from /proc and a
// median.
package benchutil

import (
	"bufio"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
)

// Result prints one "result KEY VALUE" line, the format of the C programs.
func Result(key string, value float64) {
	fmt.Printf("result %s %.6g\n", key, value)
}

// StatusBytes returns a "Name:   N kB" field of /proc/self/status in bytes.
func StatusBytes(field string) int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		panic(err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		line := s.Text()
		if strings.HasPrefix(line, field+":") {
			kb, err := strconv.ParseInt(strings.Fields(line)[1], 10, 64)
			if err != nil {
				panic(err)
			}
			return kb * 1024
		}
	}
	panic("field " + field + " not found in /proc/self/status")
}

// Mem is the resident memory of the process, with and without page tables.
type Mem struct {
	RSS    int64 // VmRSS, bytes
	RSSPTE int64 // VmRSS + VmPTE, bytes
}

// ReadMem reads VmRSS and VmPTE.
func ReadMem() Mem {
	rss := StatusBytes("VmRSS")
	return Mem{RSS: rss, RSSPTE: rss + StatusBytes("VmPTE")}
}

// Median sorts a copy of xs and returns its median.
func Median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
