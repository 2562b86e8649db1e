package mirror_test

import (
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"

	"github.com/pmemgo/pmemgo/internal/tlstesting"
)

// BenchmarkRoundTrip measures what crypto/tls itself adds to a sync
// commit's round trip, without the mirror: a message the size of a small
// batch's frame goes to an echo peer that answers with one the size of an
// ack, over mutual TLS and over plain TCP in turn. The difference is the
// floor under what TLS can add to a sync commit on this machine.
func BenchmarkRoundTrip(b *testing.B) {
	conns := [2]net.Conn{tlsEchoPair(b), echoReplyPair(b, nil)}
	msg, reply := make([]byte, 600), make([]byte, 80)
	var lat [2][]time.Duration
	for i := 0; b.Loop(); i++ {
		k := i % 2
		t0 := time.Now()
		if _, err := conns[k].Write(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(conns[k], reply); err != nil {
			b.Fatal(err)
		}
		lat[k] = append(lat[k], time.Since(t0))
	}
	if len(lat[1]) == 0 {
		return
	}
	with, without := percentile(lat[0], 0.5), percentile(lat[1], 0.5)
	b.ReportMetric(float64(with.Nanoseconds()), "tls-p50-ns")
	b.ReportMetric(float64(without.Nanoseconds()), "plain-p50-ns")
	b.ReportMetric(float64((with - without).Nanoseconds()), "tls-added-p50-ns")
}

// tlsEchoPair is echoReplyPair over mutual TLS, with the certificates
// the mirror's tests use.
func tlsEchoPair(b *testing.B) net.Conn {
	d := tlstesting.Default(b)
	return echoReplyPair(b, func(c net.Conn, server bool) net.Conn {
		if server {
			return tls.Server(c, d.ServerConfig())
		}
		cfg := d.PrimaryConfig().Clone()
		cfg.ServerName = "127.0.0.1"
		return tls.Client(c, cfg)
	})
}

// echoReplyPair returns a loopback TCP connection, wrapped by wrap if it
// is not nil, whose peer answers each 600-byte message with 80 bytes.
func echoReplyPair(b *testing.B, wrap func(c net.Conn, server bool) net.Conn) net.Conn {
	return servedPair(b, wrap, func(c net.Conn) error {
		buf := make([]byte, 600)
		for {
			_, err := io.ReadFull(c, buf)
			if err == nil {
				_, err = c.Write(buf[:80])
			}
			if err != nil {
				return err
			}
		}
	})
}
