//go:build race

package main

// raceEnabled makes TestMain build the magpie binary with -race too, so that
// data races in the server and client subprocesses are reported.
const raceEnabled = true
