package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Result holds one run's figures: latencies in microseconds (_us) or
// milliseconds (_ms), throughput in pairs per second.
type Result struct {
	// Sync is the run's fsync setting: always, periodic, or server (an
	// existing node's, which the bench cannot see).
	Sync string `json:"sync"`
	// Target is "self-started node" or the NATS URL measured.
	Target string `json:"target"`
	// Pool is the pool measured; Containers how many it kept warm.
	Pool       string `json:"pool"`
	Containers int    `json:"containers"`
	// StartupDelayMS is the demo app's boot time in a self-started node.
	StartupDelayMS float64 `json:"startup_delay_ms,omitempty"`

	// The floor: a bare request-reply round trip on the same connection, a
	// bare KV create on the same server, and their sum, the least an
	// acquire that writes its lease before it replies can cost.
	FloorRTTP50     float64 `json:"floor_rtt_p50_us"`
	FloorRTTP99     float64 `json:"floor_rtt_p99_us"`
	FloorKVP50      float64 `json:"floor_kv_p50_us"`
	FloorKVP99      float64 `json:"floor_kv_p99_us"`
	FloorAcquireP50 float64 `json:"floor_acquire_p50_us"`
	FloorAcquireP99 float64 `json:"floor_acquire_p99_us"`
	// FloorPairsPerSec64 is bare KV create+delete pairs per second with 64
	// concurrent writers: the floor of acquire+release pairs. It is the
	// median of FloorRounds, each run just before a round of acquire+release
	// pairs with 64 clients (Throughput.Rounds).
	FloorPairsPerSec64 float64   `json:"floor_pairs_per_sec_64"`
	FloorRounds        []float64 `json:"floor_pairs_per_sec_64_rounds"`

	// Sticky re-acquires of the same session (each extends its lease).
	StickyP50 float64 `json:"sticky_p50_us"`
	StickyP90 float64 `json:"sticky_p90_us"`
	StickyP99 float64 `json:"sticky_p99_us"`
	StickyMax float64 `json:"sticky_max_us"`
	// Acquires of new sessions served from warm containers.
	AcquireP50 float64 `json:"acquire_p50_us"`
	AcquireP90 float64 `json:"acquire_p90_us"`
	AcquireP99 float64 `json:"acquire_p99_us"`
	AcquireMax float64 `json:"acquire_max_us"`
	// ColdHits counts the acquires of new sessions that found no warm
	// container; 0 in a sound run.
	ColdHits int `json:"cold_hits"`

	// Acquire+release pairs per second with 1, 8 and 64 concurrent clients.
	PairsPerSec1  float64      `json:"pairs_per_sec_1"`
	PairsPerSec8  float64      `json:"pairs_per_sec_8"`
	PairsPerSec64 float64      `json:"pairs_per_sec_64"`
	Pairs         []Throughput `json:"pairs"`

	// Time from the acquire of a new session to the first HTTP response of
	// its container: warm, and after a cold start of the same template.
	FirstResponseWarmMS    float64 `json:"first_response_warm_ms"`
	FirstResponseWarmP99MS float64 `json:"first_response_warm_p99_ms"`
	FirstResponseColdMS    float64 `json:"first_response_cold_ms"`
	ColdAcquireMS          float64 `json:"cold_acquire_ms"`
	ColdStarts             int     `json:"cold_starts"`
	// The same with Docker containers of DockerImage (self-started runs
	// given a Docker demo image; absent otherwise).
	DockerImage                  string  `json:"docker_image,omitempty"`
	FirstResponseWarmDockerMS    float64 `json:"first_response_warm_docker_ms,omitempty"`
	FirstResponseWarmDockerP99MS float64 `json:"first_response_warm_docker_p99_ms,omitempty"`
	FirstResponseColdDockerMS    float64 `json:"first_response_cold_docker_ms,omitempty"`
	ColdAcquireDockerMS          float64 `json:"cold_acquire_docker_ms,omitempty"`
	ColdStartsDocker             int     `json:"cold_starts_docker,omitempty"`

	// The ratios: acquire p50 and p99 over the floor's, pairs at 64 clients
	// over the floor's pairs, and a cold first response over a warm one.
	AcquireP50OverFloor float64 `json:"acquire_p50_over_floor"`
	AcquireP99OverFloor float64 `json:"acquire_p99_over_floor"`
	Pairs64OverFloor    float64 `json:"pairs64_over_floor"`
	ColdOverWarm        float64 `json:"cold_over_warm"`
	ColdOverWarmDocker  float64 `json:"cold_over_warm_docker,omitempty"`

	samples samples
}

// Throughput is one run of concurrent acquire+release loops.
type Throughput struct {
	Clients     int     `json:"clients"`
	Pairs       int     `json:"pairs"`
	PairsPerSec float64 `json:"pairs_per_sec"`
	// AcquireP50 and AcquireP99 are the acquires' latency under this load.
	AcquireP50 float64 `json:"acquire_p50_us"`
	AcquireP99 float64 `json:"acquire_p99_us"`
	// Retries counts acquires that found no container and were retried.
	Retries int `json:"retries"`
	// Rounds are the pairs per second of each round, for the client count
	// run in rounds against the floor; PairsPerSec is then their median.
	Rounds []float64 `json:"rounds,omitempty"`

	latencies []time.Duration
}

// samples are a run's raw latencies, for the plot.
type samples struct {
	rtt, kv, sticky, acquire                            []time.Duration
	warmFirst, coldFirst, coldAcquire                   []time.Duration
	dockerWarmFirst, dockerColdFirst, dockerColdAcquire []time.Duration
}

type dist struct {
	n                  int
	p50, p90, p99, max time.Duration
}

// summarize sorts d in place and reads its percentiles (nearest rank).
func summarize(d []time.Duration) dist {
	slices.Sort(d)
	return dist{n: len(d), p50: quantile(d, 0.50), p90: quantile(d, 0.90), p99: quantile(d, 0.99), max: quantile(d, 1)}
}

// quantile of sorted d by nearest rank; 0 for no samples.
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func (r *Result) summarize() {
	s := &r.samples
	rtt, kv := summarize(s.rtt), summarize(s.kv)
	r.FloorRTTP50, r.FloorRTTP99 = us(rtt.p50), us(rtt.p99)
	r.FloorKVP50, r.FloorKVP99 = us(kv.p50), us(kv.p99)
	r.FloorAcquireP50 = round(r.FloorRTTP50+r.FloorKVP50, 1)
	r.FloorAcquireP99 = round(r.FloorRTTP99+r.FloorKVP99, 1)
	r.FloorPairsPerSec64 = round(r.FloorPairsPerSec64, 0)

	st := summarize(s.sticky)
	r.StickyP50, r.StickyP90, r.StickyP99, r.StickyMax = us(st.p50), us(st.p90), us(st.p99), us(st.max)
	ac := summarize(s.acquire)
	r.AcquireP50, r.AcquireP90, r.AcquireP99, r.AcquireMax = us(ac.p50), us(ac.p90), us(ac.p99), us(ac.max)

	for _, t := range r.Pairs {
		switch t.Clients {
		case 1:
			r.PairsPerSec1 = t.PairsPerSec
		case 8:
			r.PairsPerSec8 = t.PairsPerSec
		case 64:
			r.PairsPerSec64 = t.PairsPerSec
		}
	}

	wf, cf, ca := summarize(s.warmFirst), summarize(s.coldFirst), summarize(s.coldAcquire)
	r.FirstResponseWarmMS, r.FirstResponseWarmP99MS = ms(wf.p50), ms(wf.p99)
	r.FirstResponseColdMS, r.ColdAcquireMS, r.ColdStarts = ms(cf.p50), ms(ca.p50), cf.n

	r.AcquireP50OverFloor = ratio(r.AcquireP50, r.FloorAcquireP50)
	r.AcquireP99OverFloor = ratio(r.AcquireP99, r.FloorAcquireP99)
	r.Pairs64OverFloor = ratio(r.PairsPerSec64, r.FloorPairsPerSec64)
	r.ColdOverWarm = ratio(r.FirstResponseColdMS, r.FirstResponseWarmMS)
	if len(s.dockerWarmFirst) > 0 {
		wf, cf, ca := summarize(s.dockerWarmFirst), summarize(s.dockerColdFirst), summarize(s.dockerColdAcquire)
		r.FirstResponseWarmDockerMS, r.FirstResponseWarmDockerP99MS = ms(wf.p50), ms(wf.p99)
		r.FirstResponseColdDockerMS, r.ColdAcquireDockerMS, r.ColdStartsDocker = ms(cf.p50), ms(ca.p50), cf.n
		r.ColdOverWarmDocker = ratio(r.FirstResponseColdDockerMS, r.FirstResponseWarmDockerMS)
	}
}

func us(d time.Duration) float64 { return round(float64(d)/float64(time.Microsecond), 1) }
func ms(d time.Duration) float64 { return round(float64(d)/float64(time.Millisecond), 2) }

func round(v float64, places int) float64 {
	p := math.Pow(10, float64(places))
	return math.Round(v*p) / p
}

func ratio(a, b float64) float64 {
	if b <= 0 {
		return 0
	}
	return round(a/b, 2)
}

// Report is what Run returns. Its JSON is one object: the figures of the
// main run (sync always when it ran, else the only run) at the top level,
// and every run under "runs".
type Report struct {
	Result
	Time      time.Time `json:"time"`
	GoVersion string    `json:"go_version"`
	CPUs      int       `json:"cpus"`
	Quick     bool      `json:"quick"`
	ElapsedS  float64   `json:"elapsed_s"`
	// DockerSkipped says why Docker containers were not measured, when
	// they could have been (see Options.DockerSkipped).
	DockerSkipped string   `json:"docker_skipped,omitempty"`
	Runs          []Result `json:"runs"`
}

func newReport(o Options, runs []Result, elapsed time.Duration) *Report {
	r := &Report{
		Time: time.Now().UTC().Truncate(time.Second), GoVersion: runtime.Version(), CPUs: runtime.GOMAXPROCS(0),
		Quick: o.Quick, ElapsedS: round(elapsed.Seconds(), 1), Runs: runs, DockerSkipped: o.DockerSkipped,
	}
	r.Result = runs[0]
	for _, run := range runs {
		if run.Sync == SyncAlways {
			r.Result = run
			break
		}
	}
	return r
}

// WriteJSON writes the report as one indented JSON object.
func (r *Report) WriteJSON(w io.Writer) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// WriteTable writes the report as a table for people, a column a run.
func (r *Report) WriteTable(w io.Writer) error {
	first := r.Runs[0]
	plan := "full plan"
	if r.Quick {
		plan = "quick plan"
	}
	fmt.Fprintf(w, "warmpool bench, %s, %d CPUs, %s, %s, took %.0f s\n", r.Time.Format(time.RFC3339), r.CPUs, r.GoVersion, plan, r.ElapsedS)
	if first.Target == "self-started node" {
		fmt.Fprintf(w, "target: a self-started node per sync setting; pool %q keeps %d demo-app processes warm (startup delay %s)\n",
			first.Pool, first.Containers, time.Duration(first.StartupDelayMS*float64(time.Millisecond)))
	} else {
		fmt.Fprintf(w, "target: %s, pool %q (%d containers warm; sync as the server is set)\n", first.Target, first.Pool, first.Containers)
	}
	if first.DockerImage != "" {
		fmt.Fprintf(w, "Docker: pool %q keeps %d containers of %s warm, %q cold-starts them\n", DockerPool, dockerWarm, first.DockerImage, DockerColdPool)
	} else if r.DockerSkipped != "" {
		fmt.Fprintf(w, "Docker: not measured: %s\n", r.DockerSkipped)
	}
	fmt.Fprintln(w, "latencies as one client sees them over one NATS connection; floor = bare NATS round trip + bare KV create, same server")
	fmt.Fprintln(w)

	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	row := func(label string, cell func(Result) string) {
		cells := []string{label}
		for _, run := range r.Runs {
			cells = append(cells, cell(run))
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t")+"\t")
	}
	row("", func(x Result) string { return "sync " + x.Sync })
	pair := func(a, b float64) string { return fmtUS(a) + " / " + fmtUS(b) }
	row("floor: NATS request-reply, p50 / p99", func(x Result) string { return pair(x.FloorRTTP50, x.FloorRTTP99) })
	row("floor: KV create, p50 / p99", func(x Result) string { return pair(x.FloorKVP50, x.FloorKVP99) })
	row("floor: acquire = RTT + KV, p50 / p99", func(x Result) string { return pair(x.FloorAcquireP50, x.FloorAcquireP99) })
	row("floor: KV create+delete, 64 writers", func(x Result) string { return fmtRate(x.FloorPairsPerSec64) + rounds(x.FloorRounds) })
	row("acquire, sticky: p50 / p99", func(x Result) string { return pair(x.StickyP50, x.StickyP99) })
	row("                 p90 / max", func(x Result) string { return pair(x.StickyP90, x.StickyMax) })
	row("acquire, new from warm: p50 / p99", func(x Result) string { return pair(x.AcquireP50, x.AcquireP99) })
	row("                        p90 / max", func(x Result) string { return pair(x.AcquireP90, x.AcquireMax) })
	for i, c := range Clients {
		label := fmt.Sprintf("acquire+release, %d clients", c)
		if c == 1 {
			label = "acquire+release, 1 client"
		}
		row(label, func(x Result) string {
			if i >= len(x.Pairs) {
				return "-"
			}
			t := x.Pairs[i]
			s := fmt.Sprintf("%s  (acquire p50 %s)", fmtRate(t.PairsPerSec), fmtUS(t.AcquireP50))
			if t.Retries > 0 {
				s += fmt.Sprintf(", %d retries", t.Retries)
			}
			return s + rounds(t.Rounds)
		})
	}
	row("first HTTP response, warm: p50 / p99", func(x Result) string {
		return fmtMS(x.FirstResponseWarmMS) + " / " + fmtMS(x.FirstResponseWarmP99MS)
	})
	row("first HTTP response, cold: p50", func(x Result) string {
		return fmt.Sprintf("%s  (acquire %s; %d starts)", fmtMS(x.FirstResponseColdMS), fmtMS(x.ColdAcquireMS), x.ColdStarts)
	})
	if r.DockerImage != "" {
		row("Docker first HTTP response, warm: p50 / p99", func(x Result) string {
			return fmtMS(x.FirstResponseWarmDockerMS) + " / " + fmtMS(x.FirstResponseWarmDockerP99MS)
		})
		row("Docker first HTTP response, cold: p50", func(x Result) string {
			return fmt.Sprintf("%s  (acquire %s; %d starts)", fmtMS(x.FirstResponseColdDockerMS), fmtMS(x.ColdAcquireDockerMS), x.ColdStartsDocker)
		})
	}
	row("acquire / floor: p50, p99", func(x Result) string {
		return fmt.Sprintf("%.2fx, %.2fx", x.AcquireP50OverFloor, x.AcquireP99OverFloor)
	})
	row("pairs at 64 / floor pairs at 64", func(x Result) string { return fmt.Sprintf("%.2f", x.Pairs64OverFloor) })
	row("cold / warm first response", func(x Result) string { return fmt.Sprintf("%.0fx", x.ColdOverWarm) })
	if r.DockerImage != "" {
		row("Docker: cold / warm first response", func(x Result) string { return fmt.Sprintf("%.0fx", x.ColdOverWarmDocker) })
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, run := range r.Runs {
		if run.ColdHits > 0 {
			fmt.Fprintf(w, "note: sync %s: %d acquires of new sessions found no warm container\n", run.Sync, run.ColdHits)
		}
	}
	return nil
}

// rounds tells a rate that is a median of rounds, and their spread.
func rounds(v []float64) string {
	if len(v) < 2 {
		return ""
	}
	return fmt.Sprintf("  [median of %d rounds: %s to %s]", len(v),
		thousands(int64(math.Round(slices.Min(v)))), thousands(int64(math.Round(slices.Max(v)))))
}

// fmtUS writes microseconds in the unit that reads best.
func fmtUS(v float64) string {
	switch {
	case v < 1000:
		return fmt.Sprintf("%.0f µs", v)
	case v < 10000:
		return fmt.Sprintf("%.2f ms", v/1000)
	case v < 1e6:
		return fmt.Sprintf("%.1f ms", v/1000)
	default:
		return fmt.Sprintf("%.2f s", v/1e6)
	}
}

func fmtMS(v float64) string { return fmtUS(v * 1000) }

// fmtRate writes pairs per second with thousands separators.
func fmtRate(v float64) string { return thousands(int64(math.Round(v))) + " pairs/s" }

func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 && s[i-1] != '-' {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}
