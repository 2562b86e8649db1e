package main

import (
	"time"

	"github.com/spf13/pflag"

	"github.com/pmemgo/pmemgo/mirror"
)

// serveLimits are the caps of `replica serve`, which bound what any client
// can make the server spend.
type serveLimits struct {
	maxConns, maxPools     int
	maxPoolSize, maxMemory sizeValue
	idleTimeout            time.Duration
	maxEpochJump           uint64
	handshakeTimeout       time.Duration
}

func (l *serveLimits) addFlags(fs *pflag.FlagSet) {
	l.maxPoolSize, l.maxMemory = 16<<30, 1<<30
	fs.IntVar(&l.maxConns, "max-conns", 256, "connections served at once; more are closed at once")
	fs.IntVar(&l.maxPools, "max-pools", 1024, "pools kept; a hello for a new pool beyond it is refused")
	fs.Var(&l.maxPoolSize, "max-pool-size", "largest pool accepted (suffixes K, M, G, T)")
	fs.Var(&l.maxMemory, "max-memory", "memory held by frames being received, over all connections")
	fs.DurationVar(&l.idleTimeout, "idle-timeout", 30*time.Second, "wait for each message of a primary and each write to it")
	fs.DurationVar(&l.handshakeTimeout, "handshake-timeout", 10*time.Second, "wait for a connection's first message")
	fs.Uint64Var(&l.maxEpochJump, "max-epoch-jump", 1<<16, "how far a primary's epoch may be ahead of the newest seen for its pool")
}

func (l *serveLimits) apply(o *mirror.ServerOptions) {
	o.MaxConns, o.MaxPools = l.maxConns, l.maxPools
	o.MaxPoolSize, o.MaxMemory = int64(l.maxPoolSize), int64(l.maxMemory)
	o.IdleTimeout, o.HandshakeTimeout, o.MaxEpochJump = l.idleTimeout, l.handshakeTimeout, l.maxEpochJump
}
