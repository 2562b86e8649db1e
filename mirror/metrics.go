package mirror

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// primaryMetrics are the metrics of a Mirror. Lag is computed from Status
// when scraped, so that it never goes stale.
type primaryMetrics struct {
	batches prometheus.Counter
	bytes   prometheus.Counter
	ack     prometheus.Histogram
	lag     *lagCollector
	// lazy, kept and fallbacks count the batches read after their commit
	// boundary, the old lines kept for them, and the batches read on the
	// committing goroutine because KeepBytes was reached.
	lazy, kept, fallbacks prometheus.Counter
}

func newPrimaryMetrics() *primaryMetrics {
	return &primaryMetrics{
		batches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pmemgo_mirror_batches_total", Help: "Batches captured for replication.",
		}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pmemgo_mirror_bytes_total", Help: "Pool bytes captured for replication.",
		}),
		ack: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "pmemgo_mirror_ack_latency_seconds",
			Help:    "Time from capturing a batch to a replica acknowledging it as durable.",
			Buckets: prometheus.ExponentialBuckets(10e-6, 2.5, 14),
		}),
		lazy: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pmemgo_mirror_lazy_batches_total", Help: "Async batches read by their sender after later commits began.",
		}),
		kept: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pmemgo_mirror_kept_lines_total", Help: "Old lines kept for async batches not yet read when a commit changed them.",
		}),
		fallbacks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pmemgo_mirror_keep_fallbacks_total", Help: "Async batches read on the committing goroutine because the kept lines reached KeepBytes.",
		}),
	}
}

func (pm *primaryMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{pm.batches, pm.bytes, pm.ack, pm.lag, pm.lazy, pm.kept, pm.fallbacks}
}

var (
	lagBytesDesc = prometheus.NewDesc("pmemgo_mirror_lag_bytes",
		"Bytes captured or pending that the replica has not acknowledged.", []string{"replica"}, nil)
	lagSecondsDesc = prometheus.NewDesc("pmemgo_mirror_lag_seconds",
		"Age of the oldest commit the replica has not acknowledged.", []string{"replica"}, nil)
	ackedSeqDesc = prometheus.NewDesc("pmemgo_mirror_acked_seq",
		"Newest batch the replica acknowledged.", []string{"replica"}, nil)
)

// lagCollector reports each replica's lag from the Mirror's status.
type lagCollector struct{ m *Mirror }

func (c *lagCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- lagBytesDesc
	ch <- lagSecondsDesc
	ch <- ackedSeqDesc
}

func (c *lagCollector) Collect(ch chan<- prometheus.Metric) {
	for _, st := range c.m.Status() {
		ch <- prometheus.MustNewConstMetric(lagBytesDesc, prometheus.GaugeValue, float64(st.LagBytes), st.Addr)
		ch <- prometheus.MustNewConstMetric(lagSecondsDesc, prometheus.GaugeValue, st.LagTime.Seconds(), st.Addr)
		ch <- prometheus.MustNewConstMetric(ackedSeqDesc, prometheus.GaugeValue, float64(st.Acked), st.Addr)
	}
}

// replicaMetrics are the metrics of a Server.
type replicaMetrics struct {
	batches   prometheus.Counter
	bytes     prometheus.Counter
	snapshots prometheus.Counter
	applied   *prometheus.GaugeVec
	lag       *prometheus.GaugeVec
}

func newReplicaMetrics() *replicaMetrics {
	return &replicaMetrics{
		batches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pmemgo_replica_batches_total", Help: "Batches applied durably.",
		}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pmemgo_replica_bytes_total", Help: "Pool bytes applied durably, snapshots included.",
		}),
		snapshots: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pmemgo_replica_snapshots_total", Help: "Snapshots installed.",
		}),
		applied: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pmemgo_replica_applied_seq", Help: "Newest batch applied, per pool.",
		}, []string{"pool"}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pmemgo_replica_lag_batches", Help: "Batches the primary had captured beyond the newest applied.",
		}, []string{"pool"}),
	}
}

func (rm *replicaMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{rm.batches, rm.bytes, rm.snapshots, rm.applied, rm.lag}
}

// register registers cs with reg, or none of them if one fails. A nil reg
// registers nothing.
func register(reg prometheus.Registerer, cs []prometheus.Collector) (unregister func(), err error) {
	if reg == nil {
		return func() {}, nil
	}
	for i, c := range cs {
		if err := reg.Register(c); err != nil {
			for _, done := range cs[:i] {
				reg.Unregister(done)
			}
			return nil, errors.Join(errors.New("register metrics"), err)
		}
	}
	return func() {
		for _, c := range cs {
			reg.Unregister(c)
		}
	}, nil
}
