package main

import (
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"slices"
)

// -mode placement is the capacity model's placement balance: -objects
// puts over -n nodes, placed by each policy a cluster client could use,
// with sizes drawn from a heavy-tailed distribution (log-normal, median
// 4 KiB, σ 1.5: a few objects are a thousand times the median). It prints,
// per policy, the spread of objects and of bytes over the nodes: the
// fullest node over the mean (what sets the cluster's capacity: the first
// node to hit --max-pinned-bytes refuses puts), and the coefficient of
// variation. No etcd or registryd takes part; a fixed seed makes every run
// the same.
//
//	round-robin   each client cycles over the nodes from its own offset
//	              (-c clients, each put made by one at random)
//	random        a node drawn uniformly for each put
//	two-choices   of two nodes drawn at random, the one with fewer bytes
//	              (the client knows each node's bytes, from GetStats)
func placement(w io.Writer, nodes, objects, clients int) error {
	if nodes < 1 || objects < 1 || clients < 1 {
		return fmt.Errorf("-n, -objects and -c must be positive")
	}
	rng := rand.New(rand.NewPCG(1, 2)) //nolint:gosec // a simulation wants a fixed seed, not unpredictability
	sizes := make([]float64, objects)
	for i := range sizes {
		sizes[i] = math.Exp(math.Log(4096) + 1.5*rng.NormFloat64())
	}
	offsets := make([]int, clients)
	for c := range offsets {
		offsets[c] = rng.IntN(nodes)
	}
	policies := []struct {
		name  string
		place func(i int, bytes []float64) int
	}{
		{"round-robin", func(_ int, _ []float64) int {
			c := rng.IntN(clients)
			n := offsets[c]
			offsets[c] = (n + 1) % nodes
			return n
		}},
		{"random", func(_ int, _ []float64) int { return rng.IntN(nodes) }},
		{"two-choices", func(_ int, bytes []float64) int {
			a, b := rng.IntN(nodes), rng.IntN(nodes)
			if bytes[b] < bytes[a] {
				return b
			}
			return a
		}},
	}
	fmt.Fprintf(w, "placement nodes=%d objects=%d clients=%d sizes=lognormal(median=4KiB,sigma=1.5)\n", nodes, objects, clients)
	for _, p := range policies {
		count := make([]float64, nodes)
		bytes := make([]float64, nodes)
		for i, sz := range sizes {
			n := p.place(i, bytes)
			count[n]++
			bytes[n] += sz
		}
		cMax, cMin, cCV := spread(count)
		bMax, bMin, bCV := spread(bytes)
		fmt.Fprintf(w, "%s objects_max/mean=%.3f objects_min/mean=%.3f objects_cv=%.4f bytes_max/mean=%.3f bytes_min/mean=%.3f bytes_cv=%.4f\n",
			p.name, cMax, cMin, cCV, bMax, bMin, bCV)
	}
	return nil
}

// spread returns the largest and smallest of v over its mean, and its
// coefficient of variation.
func spread(v []float64) (hi, lo, cv float64) {
	var sum float64
	for _, x := range v {
		sum += x
	}
	mean := sum / float64(len(v))
	var ss float64
	for _, x := range v {
		ss += (x - mean) * (x - mean)
	}
	return slices.Max(v) / mean, slices.Min(v) / mean, math.Sqrt(ss/float64(len(v))) / mean
}
