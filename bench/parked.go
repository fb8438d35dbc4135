// parked.go -- spawn N goroutines (N = argument 1, default 100000) that each
// check in and block on a channel; once all N have checked in, main closes
// the channel, waits for all of them and prints the sum of their results
// (N). Same algorithm as parked.fl.
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
	gate := make(chan struct{})
	var parked, done sync.WaitGroup
	parked.Add(n)
	done.Add(n)
	for i := 0; i < n; i++ {
		go func(i int) {
			parked.Done()
			<-gate
			results[i] = 1
			done.Done()
		}(i)
	}
	parked.Wait()
	close(gate)
	done.Wait()
	var sum int64
	for _, r := range results {
		sum += r
	}
	fmt.Println(sum)
}
