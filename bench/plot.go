package bench

import (
	"fmt"
	"math"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// WritePlot draws ops/s per workload as grouped bars, one colour per
// engine, on a logarithmic axis (the engines span three orders of
// magnitude), and saves it to path; the extension chooses the format
// (.svg, .png, .pdf). Bars start at 1000 ops/s; a pair that did not run
// has none.
func (rep *Report) WritePlot(path string) error {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("%d keys of 16 bytes, values of 100; every write durable but go-map's and google-btree's", rep.Keys)
	p.Y.Label.Text = "operations per second"
	// Bars are drawn from zero, which a log scale cannot place: the bars
	// are log10(ops/s) - 3 on a linear axis whose ticks are labelled as
	// powers of ten.
	p.Y.Tick.Marker = powerTicks{}
	var wls, engs []string
	for _, r := range rep.Results {
		if !contains(wls, r.Workload) {
			wls = append(wls, r.Workload)
		}
		if !contains(engs, r.Engine) {
			engs = append(engs, r.Engine)
		}
	}
	width := vg.Points(60 / float64(max(1, len(engs))))
	top := 0.0
	for i, e := range engs {
		vals := make(plotter.Values, len(wls))
		for j, w := range wls {
			if r := rep.result(e, w); r != nil && r.OpsPerSec > 1000 {
				vals[j] = math.Log10(r.OpsPerSec) - 3
				top = max(top, vals[j])
			}
		}
		bars, err := plotter.NewBarChart(vals, width)
		if err != nil {
			return err
		}
		bars.LineStyle.Width = 0
		bars.Color = plotutil.Color(i)
		bars.Offset = width * vg.Length(float64(i)-float64(len(engs)-1)/2)
		p.Add(bars)
		p.Legend.Add(e, bars)
	}
	p.Legend.Top = true
	// Headroom above the tallest bar keeps the legend clear of the bars.
	p.Y.Min, p.Y.Max = 0, math.Ceil(top)+1
	p.NominalX(wls...)
	return p.Save(vg.Length(max(8, len(wls)))*vg.Inch, 5*vg.Inch, path)
}

// powerTicks labels the axis of WritePlot: y is log10(ops/s) - 3.
type powerTicks struct{}

func (powerTicks) Ticks(lo, hi float64) []plot.Tick {
	var ticks []plot.Tick
	for y := math.Floor(lo); y <= math.Ceil(hi); y++ {
		ticks = append(ticks, plot.Tick{Value: y, Label: fmt.Sprintf("%.0e", math.Pow(10, y+3))})
	}
	return ticks
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
