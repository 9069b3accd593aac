// Package queuebench holds the measurement behind docs/ARCHITECTURE.md's
// choice of where a cluster's messages wait for offline devices
// ("Several nodes", "Why the queues stay in the store"): the same
// workloads on PostgreSQL queues (store/pgstore) and on a replicated
// JetStream stream with one durable consumer per device, on real servers.
// It has only tests and benchmarks; docs/BENCHMARKS.md has the commands
// and the numbers.
package queuebench
