//go:build !race

package heap_test

// raceEnabled is set when the tests run under the race detector, which
// makes heavy fills several times slower.
const raceEnabled = false
