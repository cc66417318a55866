package main

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// percentile returns the nearest-rank p-th percentile (0 < p <= 100) of d:
// the smallest sample with at least p % of the samples at or below it.
// d need not be sorted; it is not modified.
func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	rank := int(math.Ceil(p / 100 * float64(len(s))))
	rank = max(1, min(rank, len(s)))
	return s[rank-1]
}

// summary is the distribution of one measured step.
type summary struct {
	n                  int
	min, p50, p99, max time.Duration
}

func summarize(d []time.Duration) summary {
	if len(d) == 0 {
		return summary{}
	}
	return summary{n: len(d), min: slices.Min(d), p50: percentile(d, 50), p99: percentile(d, 99), max: slices.Max(d)}
}

// ms formats a duration in milliseconds with two decimals.
func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/1e6) }

// mib formats kB (KiB) as MiB with one decimal.
func mib(kB int64) string { return fmt.Sprintf("%.1f MiB", float64(kB)/1024) }

// cpuPercent is CPU time as a share of one core over a wall-clock window.
func cpuPercent(ticks, hz int64, wall time.Duration) float64 {
	if hz <= 0 || wall <= 0 {
		return 0
	}
	return float64(ticks) / float64(hz) / wall.Seconds() * 100
}
