// mutex.go -- W goroutines (argument 1, default NumCPU) each add 1 to one
// counter ITERS times (argument 2, default 1000000) with an increment under a sync.Mutex;
// main waits for them and prints the counter. Same algorithm as mutex.fl.
package main

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
)

var counter int64
var mu sync.Mutex

func main() {
	w, iters := runtime.NumCPU(), 1000000
	if len(os.Args) > 1 {
		w, _ = strconv.Atoi(os.Args[1])
	}
	if len(os.Args) > 2 {
		iters, _ = strconv.Atoi(os.Args[2])
	}
	var wg sync.WaitGroup
	wg.Add(w)
	for k := 0; k < w; k++ {
		go func() {
			for i := 0; i < iters; i++ {
				mu.Lock()
				counter++
				mu.Unlock()
			}
			wg.Done()
		}()
	}
	wg.Wait()
	fmt.Println(counter)
}
