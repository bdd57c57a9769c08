package main

import (
	"slices"
	"testing"
	"time"
)

// samplesEvery builds a sample a second over n seconds from t0, with the cumulative
// requests and accepted counts that reqs and acc give at each second.
func samplesEvery(t0 time.Time, n int, reqs, acc func(sec int) int) []downSample {
	var s []downSample
	for i := range n + 1 {
		s = append(s, downSample{at: t0.Add(time.Duration(i) * time.Second), requests: reqs(i), accepted: acc(i)})
	}
	return s
}

func TestOutageProbes(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	// 30 requests in the first 10 s of the outage, then one every 12 s (5 a minute),
	// and an outage a few milliseconds short of its 3 min, as the bench takes it.
	reqs := func(sec int) int { return min(sec, 10)*3 + max(0, sec-10)/12 }
	s := samplesEvery(t0, 200, reqs, func(int) int { return 0 })
	first, perMinute, avg, ok := outageProbes(s, t0, t0.Add(3*time.Minute-5*time.Millisecond))
	if !ok || first != reqs(60) || !slices.Equal(perMinute, []int{reqs(120) - reqs(60), reqs(179) - reqs(120)}) {
		t.Errorf("first %d, per minute %v, ok %v", first, perMinute, ok)
	}
	if avg < 4.5 || avg > 5.5 {
		t.Errorf("average %.2f a minute, want about 5", avg)
	}
	if _, _, _, ok := outageProbes(s, t0, t0.Add(time.Minute)); ok {
		t.Error("a one-minute outage has probes after its first minute")
	}
}

func TestOutageRecoveryTime(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	up := t0.Add(10 * time.Second)
	// Nothing accepted while down, then 2 requests/s for 20 s, then 19/s.
	acc := func(sec int) int {
		switch {
		case sec <= 10:
			return 0
		case sec <= 30:
			return 2 * (sec - 10)
		}
		return 40 + 19*(sec-30)
	}
	s := samplesEvery(t0, 60, func(int) int { return 0 }, acc)
	reached, ok, peak, _ := outageRecoveryTime(s, up, 20, 0.9)
	// The 5-s window reaches 18/s when (2·k + 19·(5−k))/5 ≥ 18, k = 0: 5 s after 30 s.
	if !ok || reached != 25*time.Second || peak != 19 {
		t.Errorf("reached %v (ok %v), peak %.1f; want 25s, 19", reached, ok, peak)
	}
	if _, ok, _, _ := outageRecoveryTime(s, up, 40, 0.9); ok {
		t.Error("reached 0.9 of 40/s at 19/s")
	}
}
