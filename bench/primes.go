// primes.go -- count the primes below LIMIT (argument 2, default 2000000) by
// trial division on W goroutines (argument 1, default NumCPU). Worker k tests
// the blocks of 1000 numbers k, k+W, k+2W, ...; main waits for them and prints
// the total. Same algorithm as primes.fl. Run with GOMAXPROCS=1 for one core.
package main

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
)

func isPrime(n int64) bool {
	if n < 4 {
		return n >= 2
	}
	if n&1 == 0 {
		return false
	}
	for d := int64(3); d*d <= n; d += 2 {
		if n%d == 0 {
			return false
		}
	}
	return true
}

func worker(k, w, limit int64) int64 {
	var count int64
	for lo := k * 1000; lo < limit; lo += w * 1000 {
		hi := lo + 1000
		if hi > limit {
			hi = limit
		}
		for n := lo; n < hi; n++ {
			if isPrime(n) {
				count++
			}
		}
	}
	return count
}

func main() {
	w, limit := int64(runtime.NumCPU()), int64(2000000)
	if len(os.Args) > 1 {
		w, _ = strconv.ParseInt(os.Args[1], 10, 64)
	}
	if len(os.Args) > 2 {
		limit, _ = strconv.ParseInt(os.Args[2], 10, 64)
	}
	counts := make([]int64, w)
	var wg sync.WaitGroup
	wg.Add(int(w))
	for k := int64(0); k < w; k++ {
		go func(k int64) {
			counts[k] = worker(k, w, limit)
			wg.Done()
		}(k)
	}
	wg.Wait()
	var sum int64
	for _, c := range counts {
		sum += c
	}
	fmt.Println(sum)
}
