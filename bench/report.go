package bench

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"
)

// WriteText writes the report as tables: ops/s, p50 and p99 per workload
// and engine, what each filled store costs, and the ratios the targets
// are stated in.
func (rep *Report) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "workload\tengine\tops/s\tp50\tp99\t\n")
	for _, r := range rep.Results {
		if r.Skipped != "" {
			fmt.Fprintf(tw, "%s\t%s\t-\t-\t-\t(%s)\n", r.Workload, r.Engine, r.Skipped)
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%.0f\t%s\t%s\t\n", r.Workload, r.Engine, r.OpsPerSec, dur(r.P50), dur(r.P99))
	}
	fmt.Fprintf(tw, "\t\t\t\t\t\n")
	fmt.Fprintf(tw, "engine\tdisk MiB\tbytes/key\topen+get\tRSS MiB\t\n")
	for _, e := range rep.Engines {
		if e.DiskBytes == 0 {
			fmt.Fprintf(tw, "%s\t-\t-\t-\t%.1f\t\n", e.Engine, mib(e.RSS))
			continue
		}
		fmt.Fprintf(tw, "%s\t%.1f\t%.0f\t%s\t%.1f\t\n", e.Engine, mib(e.DiskBytes), e.BytesPerKey, dur(e.Open), mib(e.RSS))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	warm := ""
	if rep.Warm {
		warm = ", every key read once after the reopen (--warm)"
	}
	fmt.Fprintf(w, "\n%d keys, %d operations per workload, %d-byte payload per key, in %s%s\n", rep.Keys, rep.Ops, rep.PayloadPerKey, rep.Dir, warm)
	for _, line := range rep.Ratios() {
		fmt.Fprintln(w, line)
	}
	return nil
}

// Ratios states the figures the targets are set in, for whichever of the
// engines involved ran.
func (rep *Report) Ratios() []string {
	var out []string
	ratio := func(wl, a, b, what string) {
		x, y := rep.result(a, wl), rep.result(b, wl)
		if x != nil && y != nil && y.OpsPerSec > 0 {
			out = append(out, fmt.Sprintf("%s: %s %.2fx %s (%s)", wl, a, x.OpsPerSec/y.OpsPerSec, b, what))
		}
	}
	ratio("updaterandom", "pmemgo-btree", "bbolt", "target >= 20x")
	ratio("updaterandom", "pmemgo-btree", "pebble", "target >= 3x")
	ratio("updaterandom", "pmemgo-hash", "bbolt", "target >= 20x")
	ratio("updaterandom", "pmemgo-hash", "pebble", "target >= 3x")
	ratio("updaterandom", "pmemgo-btree-buffered", "bbolt", "target >= 20x, device.Buffered")
	ratio("updaterandom", "pmemgo-btree-buffered", "pebble", "target >= 3x, device.Buffered")
	ratio("updaterandom", "pmemgo-btree-dax", "bbolt", "target >= 20x, DAX device forced")
	ratio("updaterandom", "pmemgo-btree-dax", "pebble", "target >= 3x, DAX device forced")
	ratio("readrandom", "pmemgo-btree", "google-btree", "target >= 0.67x")
	ratio("readrandom", "pmemgo-hash", "go-map", "ceiling")
	for _, e := range rep.Engines {
		if (e.Engine == "pmemgo-btree" || e.Engine == "pmemgo-hash") && e.BytesPerKey > 0 {
			out = append(out, fmt.Sprintf("%s: %.2fx the payload on disk (target <= 1.3x), reopen to first Get %s (target < 1ms)",
				e.Engine, e.BytesPerKey/float64(rep.PayloadPerKey), dur(e.Open)))
		}
	}
	return out
}

func (rep *Report) result(engine, wl string) *Result {
	for i := range rep.Results {
		if r := &rep.Results[i]; r.Engine == engine && r.Workload == wl && r.Skipped == "" {
			return r
		}
	}
	return nil
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

// dur rounds a duration to three significant digits.
func dur(d time.Duration) string {
	switch {
	case d >= time.Second:
		return d.Round(time.Millisecond).String()
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond).String()
	case d >= time.Microsecond:
		return d.Round(10 * time.Nanosecond).String()
	}
	return d.String()
}
