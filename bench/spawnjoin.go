// spawnjoin.go -- spawn N goroutines (N = argument 1, default 100000) that
// each store 2*i in a results slice, wait for all with a WaitGroup and print
// the sum; the same algorithm as spawnjoin.fl.
package main

import (
	"fmt"
	"os"
	"strconv"
	"sync"
)

func main() {
	n := 100000
	if len(os.Args) > 1 {
		n, _ = strconv.Atoi(os.Args[1])
	}
	results := make([]int64, n)
	var wg sync.WaitGroup
	wg.Add(n)
	for i := 0; i < n; i++ {
		go func(i int) {
			results[i] = int64(i) * 2
			wg.Done()
		}(i)
	}
	wg.Wait()
	var sum int64
	for _, r := range results {
		sum += r
	}
	fmt.Println(sum)
}
