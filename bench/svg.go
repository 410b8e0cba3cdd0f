package bench

import (
	"fmt"
	"html"
	"io"
	"math"
	"slices"
	"strings"
	"time"
)

// The plot's geometry, in SVG user units (pixels at 100%).
const (
	svgWidth  = 1000
	svgHeight = 600
	plotTop   = 96
	plotBot   = 416
	latLeft   = 90
	latRight  = 500
	thrLeft   = 640
	thrRight  = 950
)

// Colours (Okabe-Ito, told apart with most colour blindness) of the series,
// the same in both panels.
const (
	colRTT     = "#56B4E9"
	colKV      = "#7F7F7F"
	colAcquire = "#0072B2"
	colWarm    = "#009E73"
	colCold    = "#D55E00"
	colAxis    = "#333333"
	colGrid    = "#DDDDDD"
)

// dashOf draws sync always solid and everything else dashed.
func dashOf(sync string) string {
	if sync == SyncAlways {
		return ""
	}
	return "7 4"
}

type series struct {
	name   string
	colour string
	get    func(*samples) []time.Duration
}

var latencySeries = []series{
	{"floor: NATS request-reply", colRTT, func(s *samples) []time.Duration { return s.rtt }},
	{"floor: KV create", colKV, func(s *samples) []time.Duration { return s.kv }},
	{"acquire, new session from warm", colAcquire, func(s *samples) []time.Duration { return s.acquire }},
	{"first HTTP response, warm", colWarm, func(s *samples) []time.Duration { return s.warmFirst }},
	{"first HTTP response, cold start", colCold, func(s *samples) []time.Duration { return s.coldFirst }},
}

// WriteSVG writes the report as an SVG plot: the latency distributions (a
// CDF on a log axis) of the floor, of acquires and of first responses warm
// and cold, and the throughput of acquire+release pairs against the number
// of clients, with the floor's pairs at 64 writers; one line style a sync
// setting.
func (r *Report) WriteSVG(w io.Writer) error {
	c := &canvas{}
	c.printf(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="13">`+"\n",
		svgWidth, svgHeight, svgWidth, svgHeight)
	c.printf(`<rect width="100%%" height="100%%" fill="white"/>` + "\n")
	first := r.Runs[0]
	c.text(svgWidth/2, 30, "middle", 18, `font-weight="bold"`, "warmpool bench: acquire latency and throughput against the floor")
	sub := fmt.Sprintf("%s, %d CPUs, %s; pool %q, %d warm containers", r.Time.Format("2006-01-02 15:04 MST"), r.CPUs, r.GoVersion, first.Pool, first.Containers)
	if first.StartupDelayMS > 0 {
		sub += fmt.Sprintf("; cold start = demo app with a %s startup delay", time.Duration(first.StartupDelayMS*float64(time.Millisecond)))
	}
	c.text(svgWidth/2, 54, "middle", 13, `fill="#444"`, sub)

	r.latencyPanel(c)
	r.throughputPanel(c)
	r.legend(c)
	c.printf("</svg>\n")
	_, err := io.WriteString(w, c.b.String())
	return err
}

func (r *Report) latencyPanel(c *canvas) {
	c.text((latLeft+latRight)/2, plotTop-14, "middle", 15, `font-weight="bold"`, "Latency distribution (CDF)")
	// The axis spans whole decades around every sample.
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, run := range r.Runs {
		for _, s := range latencySeries {
			for _, d := range s.get(&run.samples) {
				v := float64(d) / float64(time.Microsecond)
				if v > 0 {
					lo, hi = math.Min(lo, v), math.Max(hi, v)
				}
			}
		}
	}
	if math.IsInf(lo, 1) {
		lo, hi = 10, 1e6
	}
	x := logAxis{lo: math.Floor(math.Log10(lo)), hi: math.Ceil(math.Log10(hi)), from: latLeft, to: latRight}
	if x.hi <= x.lo {
		x.hi = x.lo + 1
	}
	y := func(q float64) float64 { return plotBot - q*(plotBot-plotTop) }

	// Grid: decades labelled, 2..9 light; quartiles, and p99 dashed.
	for e := x.lo; e <= x.hi; e++ {
		for k := 1; k <= 9; k++ {
			v := math.Pow(10, e) * float64(k)
			if math.Log10(v) > x.hi+1e-9 {
				break
			}
			px := x.pos(v)
			if k == 1 {
				c.line(px, plotTop, px, plotBot, colGrid, 1, "")
				c.text(px, plotBot+18, "middle", 12, "", fmtTick(v))
			} else {
				c.line(px, plotTop, px, plotBot, "#F0F0F0", 1, "")
			}
		}
	}
	for _, q := range []float64{0, 0.25, 0.5, 0.75, 1} {
		c.line(latLeft, y(q), latRight, y(q), colGrid, 1, "")
		c.text(latLeft-8, y(q)+4, "end", 12, "", fmt.Sprintf("%.0f%%", q*100))
	}
	c.line(latLeft, y(0.99), latRight, y(0.99), "#BBBBBB", 1, "3 3")
	c.text(latLeft+4, y(0.99)+13, "start", 11, `fill="#777"`, "p99")
	c.rect(latLeft, plotTop, latRight-latLeft, plotBot-plotTop, colAxis)
	c.text((latLeft+latRight)/2, plotBot+42, "middle", 13, "", "latency (log scale)")
	c.vtext(latLeft-52, (plotTop+plotBot)/2, 13, "share of requests at or below the latency")

	for _, run := range r.Runs {
		for _, s := range latencySeries {
			pts := cdf(s.get(&run.samples), x, y)
			if len(pts) > 0 {
				c.polyline(pts, s.colour, dashOf(run.Sync), 2)
			}
		}
	}
}

// cdf is the step line of the empirical distribution of d, at most ~400
// steps: a run's thousands of samples would only weigh down the file.
func cdf(d []time.Duration, x logAxis, y func(float64) float64) [][2]float64 {
	if len(d) == 0 {
		return nil
	}
	sorted := slices.Clone(d)
	slices.Sort(sorted)
	steps := min(len(sorted), 400)
	var pts [][2]float64
	prev := 0.0
	for k := 1; k <= steps; k++ {
		q := float64(k) / float64(steps)
		v := float64(quantile(sorted, q)) / float64(time.Microsecond)
		px := x.pos(math.Max(v, math.Pow(10, x.lo)))
		pts = append(pts, [2]float64{px, y(prev)}, [2]float64{px, y(q)})
		prev = q
	}
	return pts
}

func (r *Report) throughputPanel(c *canvas) {
	c.text((thrLeft+thrRight)/2, plotTop-14, "middle", 15, `font-weight="bold"`, "Throughput vs concurrent clients")
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, run := range r.Runs {
		for _, t := range run.Pairs {
			if t.PairsPerSec > 0 {
				lo, hi = math.Min(lo, t.PairsPerSec), math.Max(hi, t.PairsPerSec)
			}
		}
		if run.FloorPairsPerSec64 > 0 {
			lo, hi = math.Min(lo, run.FloorPairsPerSec64), math.Max(hi, run.FloorPairsPerSec64)
		}
	}
	if math.IsInf(lo, 1) {
		lo, hi = 10, 1e4
	}
	yax := logAxis{lo: math.Floor(math.Log10(lo)), hi: math.Ceil(math.Log10(hi)), from: plotBot, to: plotTop}
	if yax.hi <= yax.lo {
		yax.hi = yax.lo + 1
	}
	// Clients on a log2 axis, so 1, 8 and 64 sit evenly, with room on the
	// right for the floor's marker and its label.
	most := float64(Clients[len(Clients)-1])
	xpos := func(clients int) float64 {
		f := math.Log2(float64(clients)) / math.Log2(most)
		return thrLeft + 30 + f*(thrRight-thrLeft-105)
	}
	for e := yax.lo; e <= yax.hi; e++ {
		for _, k := range []float64{1, 2, 5} {
			v := math.Pow(10, e) * k
			if math.Log10(v) > yax.hi+1e-9 {
				break
			}
			py := yax.pos(v)
			colour := "#F0F0F0"
			if k == 1 {
				colour = colGrid
			}
			c.line(thrLeft, py, thrRight, py, colour, 1, "")
			c.text(thrLeft-8, py+4, "end", 12, "", thousands(int64(v)))
		}
	}
	for _, n := range Clients {
		px := xpos(n)
		c.line(px, plotTop, px, plotBot, colGrid, 1, "")
		c.text(px, plotBot+18, "middle", 12, "", fmt.Sprint(n))
	}
	c.rect(thrLeft, plotTop, thrRight-thrLeft, plotBot-plotTop, colAxis)
	c.text((thrLeft+thrRight)/2, plotBot+42, "middle", 13, "", "concurrent clients (log scale)")
	c.vtext(thrLeft-62, (plotTop+plotBot)/2, 13, "acquire+release pairs per second (log scale)")

	// A point's label goes above it when its run is the highest at that
	// client count, else below: two runs' labels then do not collide.
	highest := map[int]float64{}
	for _, run := range r.Runs {
		for _, t := range run.Pairs {
			highest[t.Clients] = math.Max(highest[t.Clients], t.PairsPerSec)
		}
	}
	for _, run := range r.Runs {
		var pts [][2]float64
		for _, t := range run.Pairs {
			if t.PairsPerSec <= 0 {
				continue
			}
			p := [2]float64{xpos(t.Clients), yax.pos(t.PairsPerSec)}
			pts = append(pts, p)
		}
		if len(pts) > 0 {
			c.polyline(pts, colAcquire, dashOf(run.Sync), 2.5)
		}
		for _, t := range run.Pairs {
			if t.PairsPerSec <= 0 {
				continue
			}
			px, py := xpos(t.Clients), yax.pos(t.PairsPerSec)
			c.printf(`<circle cx="%.1f" cy="%.1f" r="4" fill="%s"/>`+"\n", px, py, colAcquire)
			dy := 19.0
			if t.PairsPerSec >= highest[t.Clients] {
				dy = -9
			}
			c.text(px, py+dy, "middle", 11, `fill="`+colAcquire+`"`, thousands(int64(math.Round(t.PairsPerSec))))
		}
		if f := run.FloorPairsPerSec64; f > 0 {
			px, py := xpos(Clients[len(Clients)-1])+22, yax.pos(f)
			fill := colKV
			if run.Sync != SyncAlways {
				fill = "white"
			}
			c.printf(`<rect x="%.1f" y="%.1f" width="9" height="9" fill="%s" stroke="%s" stroke-width="2"/>`+"\n", px-4.5, py-4.5, fill, colKV)
			c.text(px+9, py+4, "start", 11, `fill="#555"`, thousands(int64(math.Round(f))))
		}
	}
}

func (r *Report) legend(c *canvas) {
	top := float64(plotBot + 70)
	c.text(latLeft, top, "start", 13, `font-weight="bold"`, "Legend")
	for i, s := range latencySeries {
		col, row := i%2, i/2
		x, y := float64(latLeft+col*300), top+22+float64(row)*20
		c.line(x, y-4, x+30, y-4, s.colour, 3, "")
		c.text(x+38, y, "start", 12, "", s.name)
	}
	x, y := float64(thrLeft-40), top+22
	c.printf(`<circle cx="%.1f" cy="%.1f" r="4" fill="%s"/>`+"\n", x+15, y-4, colAcquire)
	c.line(x, y-4, x+30, y-4, colAcquire, 2.5, "")
	c.text(x+38, y, "start", 12, "", "acquire+release pairs/s, new sessions")
	c.printf(`<rect x="%.1f" y="%.1f" width="9" height="9" fill="%s" stroke="%s" stroke-width="2"/>`+"\n", x+10.5, y+20-8.5, colKV, colKV)
	c.text(x+38, y+20, "start", 12, "", "floor: KV create+delete pairs/s, 64 writers")
	// Line styles: one per sync setting present.
	y += 40
	for _, run := range r.Runs {
		c.line(x, y-4, x+30, y-4, colAxis, 2, dashOf(run.Sync))
		label := "sync " + run.Sync
		switch run.Sync {
		case SyncAlways:
			label += " (every write fsynced)"
		case SyncPeriodic:
			label += " (periodic fsync; floor marker hollow)"
		case SyncServer:
			label = "sync as the server is set"
		}
		c.text(x+38, y, "start", 12, "", label)
		y += 20
	}
	c.text(latLeft, svgHeight-14, "start", 11, `fill="#555"`,
		"first HTTP response = acquire of a new session + GET / of its container on a new connection; "+
			"cold: nothing warm, the acquire waits for a start")
}

// logAxis maps values onto pixels: lo and hi are the decades (log10) at
// from and to.
type logAxis struct {
	lo, hi   float64
	from, to float64
}

func (a logAxis) pos(v float64) float64 {
	f := (math.Log10(v) - a.lo) / (a.hi - a.lo)
	f = math.Min(math.Max(f, 0), 1)
	return a.from + f*(a.to-a.from)
}

// fmtTick labels a latency axis tick given in microseconds.
func fmtTick(v float64) string {
	switch {
	case v < 1000:
		return fmt.Sprintf("%g µs", v)
	case v < 1e6:
		return fmt.Sprintf("%g ms", v/1000)
	default:
		return fmt.Sprintf("%g s", v/1e6)
	}
}

// canvas accumulates SVG elements.
type canvas struct{ b strings.Builder }

func (c *canvas) printf(format string, a ...any) { fmt.Fprintf(&c.b, format, a...) }

func (c *canvas) text(x, y float64, anchor string, size int, attrs, s string) {
	c.printf(`<text x="%.1f" y="%.1f" text-anchor="%s" font-size="%d" %s>%s</text>`+"\n", x, y, anchor, size, attrs, html.EscapeString(s))
}

// vtext writes s rotated to read bottom-up, centred on (x, y).
func (c *canvas) vtext(x, y float64, size int, s string) {
	c.printf(`<text x="%.1f" y="%.1f" text-anchor="middle" font-size="%d" transform="rotate(-90 %.1f %.1f)">%s</text>`+"\n",
		x, y, size, x, y, html.EscapeString(s))
}

func (c *canvas) line(x1, y1, x2, y2 float64, stroke string, width float64, dash string) {
	c.printf(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="%g"%s/>`+"\n", x1, y1, x2, y2, stroke, width, dashAttr(dash))
}

func (c *canvas) rect(x, y, w, h float64, stroke string) {
	c.printf(`<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="none" stroke="%s"/>`+"\n", x, y, w, h, stroke)
}

func (c *canvas) polyline(pts [][2]float64, stroke, dash string, width float64) {
	var b strings.Builder
	for i, p := range pts {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%.1f,%.1f", p[0], p[1])
	}
	c.printf(`<polyline points="%s" fill="none" stroke="%s" stroke-width="%g" stroke-linejoin="round"%s/>`+"\n", b.String(), stroke, width, dashAttr(dash))
}

func dashAttr(dash string) string {
	if dash == "" {
		return ""
	}
	return fmt.Sprintf(` stroke-dasharray="%s"`, dash)
}
