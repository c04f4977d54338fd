package benchmarks

// The cold-start report: medians per workload and mode, the goals, a
// markdown file, a hand-written SVG bar chart and the raw runs as JSON.

import (
	"encoding/json"
	"fmt"
	"html"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

const (
	// helloBytes and fewRoundTrips make the hello-world goal's budget:
	// total ≤ helloSlack × ((helloBytes + fewRoundTrips RTTs)/bandwidth +
	// container start).
	helloBytes    = 5e6
	fewRoundTrips = 5
	helloSlack    = 1.2
	// hashSlack: the hash's total ≤ hashSlack × file size / bandwidth,
	// background fetch on.
	hashSlack = 1.05
	// fetchSlack: a start with background fetch on fetches, by the
	// container's exit, at most fetchSlack × the bytes it needs.
	fetchSlack = 1.5
	// backgroundSlack: a cold start with background fetch on takes at most
	// backgroundSlack × as long as with it off.
	backgroundSlack = 1.05
	// learnedSlack: a start with a profile learned by another node and
	// fetched from the registry (learned) takes at most learnedSlack × as
	// long as with the recorded files converted into the image
	// (prioritized).
	learnedSlack = 1.10
	// zstdSlack: a start of the zstd:chunked image (zstd) takes at most
	// zstdSlack × as long as of the eStargz one (lazy), issue 17.
	zstdSlack = 1.05
	// lineRateSlack, lineRateHashSlack: a start of an image with no index
	// (linerate: lazysnap pulls it at line rate) takes at most that × the
	// link time of the bytes it moved: hello (the python image) and hash
	// (+ 512 MiB), issue 24.
	lineRateSlack     = 1.15
	lineRateHashSlack = 1.10
	// learnedIndexSlack: a start of the gzip image through the SOCI index
	// a previous node's line-rate pull published (soci-learned) takes at
	// most that × as long as with the index of lazysnap index (soci),
	// issue 24.
	learnedIndexSlack = 1.2
)

// Issue 13's absolute goals (seconds, lazysnap in its default
// configuration), for the default WAN: goalRTT and goalMbits.
var absGoals = []struct {
	workload, mode string
	seconds        float64
	what           string
}{
	{"hello", "lazy", 1.2, "unprofiled eStargz"},
	{"imports", "lazy", 2.0, "unprofiled eStargz"},
	{"hello", "prioritized", 0.9, "recorded profile"},
}

const (
	goalRTT   = 20 * time.Millisecond
	goalMbits = 100
)

// median is one workload × mode, each metric the median of its runs.
type median struct {
	Workload, Mode                 string
	Runs                           int
	Pull, FirstOutput, Total       float64
	Bytes, Requests, PeakRSS       int64
	PullBytes, PullReqs, Serial    int64
	PeakOf                         string
	Kinds                          string  // requests by kind, of the run nearest the median total
	Run                            float64 // Total - Pull
	MinTotal, MaxTotal             float64
	Bound                          int64 // bytes a lazy start needs, prefetch included (0: not a lazy mode)
	workloadTitle, modeTitle, kind string
	mode                           mode
}

// goal is one checked goal for one mode.
type goal struct {
	Name, Mode      string
	Measured, Bound float64
	Unit            string
	Why             string // for a miss
}

func (g goal) ratio() float64 { return g.Measured / g.Bound }
func (g goal) met() bool      { return g.Measured <= g.Bound }

type report struct {
	Date       string        `json:"date"`
	Machine    string        `json:"machine"`
	Disk       string        `json:"disk,omitempty"`
	RTTms      float64       `json:"rtt_ms"`
	Mbits      float64       `json:"mbit_per_s"`
	RunsEach   int           `json:"runs_each"`
	BigMiB     int64         `json:"big_file_mib"`
	SmallFiles int           `json:"small_files"`
	Modes      []string      `json:"modes"`
	Elapsed    time.Duration `json:"elapsed_ns"`
	Runs       []runResult   `json:"runs"`
	Failures   []failure     `json:"failures,omitempty"`

	cfg     benchConfig
	images  *imageSet
	medians []median
	goals   []goal
	// absSkipped: the WAN is not the one issue 13's absolute goals are for
	absSkipped bool
}

func newReport(cfg benchConfig, images *imageSet, runs []runResult) *report {
	var uts unix.Utsname
	unix.Uname(&uts)
	r := &report{
		Date:    time.Now().UTC().Format("2006-01-02 15:04 UTC"),
		Machine: fmt.Sprintf("%d cores, Linux %s", runtime.NumCPU(), unix.ByteSliceToString(uts.Release[:])),
		RTTms:   float64(cfg.rtt) / float64(time.Millisecond), Mbits: float64(cfg.bandwidth) * 8 / 1e6,
		RunsEach: cfg.runs, BigMiB: cfg.bigBytes >> 20, SmallFiles: cfg.smallFiles,
		Runs: runs, cfg: cfg, images: images,
	}
	for _, m := range cfg.modes {
		r.Modes = append(r.Modes, m.name)
	}
	for _, w := range cfg.workloads {
		for _, m := range cfg.modes {
			var rs []runResult
			for _, x := range runs {
				if x.Workload == w.name && x.Mode == m.name {
					rs = append(rs, x)
				}
			}
			if len(rs) == 0 {
				continue
			}
			md := median{Workload: w.name, Mode: m.name, Runs: len(rs), PeakOf: rs[0].PeakOf,
				workloadTitle: w.title, modeTitle: m.title, kind: m.kind, mode: m}
			f := func(get func(runResult) float64) float64 {
				v := make([]float64, len(rs))
				for i, x := range rs {
					v[i] = get(x)
				}
				slices.Sort(v)
				if len(v)%2 == 1 {
					return v[len(v)/2]
				}
				return (v[len(v)/2-1] + v[len(v)/2]) / 2
			}
			md.Pull = f(func(x runResult) float64 { return x.Pull })
			md.FirstOutput = f(func(x runResult) float64 { return x.FirstOutput })
			md.Total = f(func(x runResult) float64 { return x.Total })
			md.Run = f(func(x runResult) float64 { return x.Total - x.Pull })
			md.Bytes = int64(f(func(x runResult) float64 { return float64(x.Bytes) }))
			md.Requests = int64(f(func(x runResult) float64 { return float64(x.Requests) }))
			md.PeakRSS = int64(f(func(x runResult) float64 { return float64(x.PeakRSS) }))
			md.PullBytes = int64(f(func(x runResult) float64 { return float64(x.PullBytes) }))
			md.PullReqs = int64(f(func(x runResult) float64 { return float64(x.PullReqs) }))
			md.Serial = int64(f(func(x runResult) float64 { return float64(x.SerialReqs) }))
			md.Kinds = slices.MinFunc(rs, func(a, b runResult) int {
				return cmpF(math.Abs(a.Total-md.Total), math.Abs(b.Total-md.Total))
			}).Kinds
			md.MinTotal = slices.MinFunc(rs, func(a, b runResult) int { return cmpF(a.Total, b.Total) }).Total
			md.MaxTotal = slices.MaxFunc(rs, func(a, b runResult) int { return cmpF(a.Total, b.Total) }).Total
			if images != nil && m.kind != "overlayfs" && !m.lineRate {
				// every lazy mode prefetches the prioritized files (the
				// default of both systems; none in an unprofiled image)
				md.Bound = images.needs[w.name+":"+tagFor(cfg, w, m)].withPrefetch
			}
			r.medians = append(r.medians, md)
		}
	}
	r.goals = r.checkGoals()
	return r
}

func cmpF(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func (r *report) find(workload, mode string) *median {
	for i := range r.medians {
		if r.medians[i].Workload == workload && r.medians[i].Mode == mode {
			return &r.medians[i]
		}
	}
	return nil
}

// checkGoals evaluates the goals on this run's medians. They are
// lazysnap's: the peer is measured beside it in the tables, not held to
// them.
func (r *report) checkGoals() []goal {
	bw := float64(r.cfg.bandwidth)
	rtt := r.cfg.rtt.Seconds()
	var gs []goal
	defaults := func(yield func(median) bool) { // lazysnap in its default configuration
		for _, m := range r.medians {
			if m.kind == "lazysnap" && !m.mode.secondary() && !m.mode.lineRate && !yield(m) {
				return
			}
		}
	}
	timeWhy := func(m median) string {
		return fmt.Sprintf("pull %.2f s + run %.2f s, first output at %.2f s; "+
			"%.1f MB, %.2f s at the link rate; %d requests, %d of them made while no other was in flight, "+
			"%.2f s of round trips one after another (%s)",
			m.Pull, m.Run, m.FirstOutput, float64(m.Bytes)/1e6, float64(m.Bytes)/bw, m.Requests, m.Serial, float64(m.Serial)*rtt, m.Kinds)
	}

	// issue 13's absolute times, for the WAN they were set for
	r.absSkipped = r.cfg.rtt != goalRTT || math.Abs(float64(r.cfg.bandwidth)*8/1e6-goalMbits) > 0.01
	for _, a := range absGoals {
		m := r.find(a.workload, a.mode)
		if m == nil || r.absSkipped {
			continue
		}
		g := goal{Name: fmt.Sprintf("%s total ≤ %.1f s (%s)", a.workload, a.seconds, a.what), Mode: m.Mode,
			Measured: m.Total, Bound: a.seconds, Unit: "s"}
		if !g.met() {
			g.Why = timeWhy(*m)
		}
		gs = append(gs, g)
	}

	start := r.find("hello", "overlayfs")
	for m := range defaults {
		if m.Workload != "hello" || start == nil {
			continue
		}
		g := goal{Name: fmt.Sprintf("hello total ≤ %.1f × ((5 MB + %d RTT)/bandwidth + container start %.2f s)", helloSlack, fewRoundTrips, start.Run),
			Mode: m.Mode, Measured: m.Total, Bound: helloSlack * (helloBytes/bw + fewRoundTrips*rtt + start.Run), Unit: "s"}
		if !g.met() {
			g.Why = fmt.Sprintf("the same container from a local image runs in %.2f s; %s", start.Run, timeWhy(m))
		}
		gs = append(gs, g)
	}

	for m := range defaults {
		if m.Workload != "hash" {
			continue
		}
		g := goal{Name: fmt.Sprintf("hash total ≤ %.2f × %d MiB/bandwidth", hashSlack, r.BigMiB),
			Mode: m.Mode, Measured: m.Total, Bound: hashSlack * float64(r.cfg.bigBytes) / bw, Unit: "s"}
		if !g.met() {
			g.Why = fmt.Sprintf("%.1f MB fetched take %.2f s at the link rate (%.0f%% of the total): pull %.2f s (%.1f MB), run %.2f s; "+
				"%d requests, %d made while no other was in flight",
				float64(m.Bytes)/1e6, float64(m.Bytes)/bw, 100*float64(m.Bytes)/bw/m.Total, m.Pull, float64(m.PullBytes)/1e6, m.Run, m.Requests, m.Serial)
		}
		gs = append(gs, g)
	}

	for _, m := range r.medians {
		if m.Bound == 0 || m.kind != "lazysnap" {
			continue
		}
		what := "needed"
		if m.mode.prioritized {
			what = "needed + prefetch"
		}
		slack, name := fetchSlack, fmt.Sprintf("bytes fetched by the container's exit ≤ %.1f × %s (%s)", fetchSlack, map[bool]string{true: "(" + what + ")", false: what}[m.mode.prioritized], m.Workload)
		if m.mode.noBackground {
			slack, name = 1, fmt.Sprintf("bytes fetched ≤ %s (%s)", what, m.Workload)
		}
		g := goal{Name: name, Mode: m.Mode, Measured: float64(m.Bytes) / 1e6, Bound: slack * float64(m.Bound) / 1e6, Unit: "MB"}
		if !g.met() {
			files := 0
			if r.images != nil {
				files = len(r.images.files[m.Workload])
			}
			g.Why = fmt.Sprintf("%.3f MB fetched, %.3f MB needed: the manifest, config, TOCs and the chunks of the %d files opened%s (%s)",
				float64(m.Bytes)/1e6, float64(m.Bound)/1e6, files,
				map[bool]string{true: " plus the prioritized ranges", false: ""}[m.mode.prioritized], m.Kinds)
			if !m.mode.noBackground {
				g.Why += "; the rest is background fetch that started before the start went quiet"
			}
		}
		gs = append(gs, g)
	}

	// an image with no index: its bytes at the link's rate, unpacked on
	// the way (issue 24)
	for _, m := range r.medians {
		slack, ok := map[string]float64{"hello": lineRateSlack, "hash": lineRateHashSlack}[m.Workload]
		if !m.mode.lineRate || !ok {
			continue
		}
		g := goal{Name: fmt.Sprintf("%s total ≤ %.2f × link time of the %.1f MB moved (no index: pulled at line rate)", m.Workload, slack, float64(m.Bytes)/1e6),
			Mode: m.Mode, Measured: m.Total, Bound: slack * float64(m.Bytes) / bw, Unit: "s"}
		if o := r.find(m.Workload, "overlayfs"); !g.met() || o != nil {
			g.Why = timeWhy(m)
			if o != nil {
				g.Why += fmt.Sprintf("; containerd's pull (overlayfs): total %.2f s, pull %.2f s", o.Total, o.Pull)
			}
		}
		gs = append(gs, g)
	}

	// a mode against another on the same image's workload: a learned
	// profile must do about what a recorded one does, an index learned by
	// another node's line-rate pull what lazysnap index's does, and
	// zstd:chunked what eStargz does
	for _, rel := range []struct {
		is             func(mode) bool
		base           string
		slack          float64
		baseWhat       string
		name, baseName string
	}{
		{func(m mode) bool { return m.learned }, "prioritized", learnedSlack, "the recorded-profile image", "learned", "prioritized"},
		{func(m mode) bool { return m.soci == sociLearned }, "soci", learnedIndexSlack, "the lazysnap index image", "soci-learned", "soci"},
		{func(m mode) bool { return m.zstd }, "lazy", zstdSlack, "the eStargz image", "zstd:chunked", "eStargz"},
	} {
		for _, l := range r.medians {
			if !rel.is(l.mode) {
				continue
			}
			p := r.find(l.Workload, rel.base)
			if p == nil {
				continue
			}
			g := goal{Name: fmt.Sprintf("%s total ≤ %.2f × with %s (%s)", l.Workload, rel.slack, rel.baseWhat, rel.base),
				Mode: l.Mode, Measured: l.Total, Bound: rel.slack * p.Total, Unit: "s"}
			if !g.met() {
				g.Why = fmt.Sprintf("%s: %s; %s: %s", rel.name, timeWhy(l), rel.baseName, timeWhy(*p))
			}
			gs = append(gs, g)
		}
	}

	// background fetch must not slow a start down: each default mode
	// against the same start with it off
	for _, off := range r.medians {
		if !off.mode.noBackground {
			continue
		}
		on := r.find(off.Workload, off.mode.of)
		if on == nil {
			continue
		}
		g := goal{Name: fmt.Sprintf("%s total ≤ %.2f × with background fetch off (%s)", off.Workload, backgroundSlack, off.Mode),
			Mode: on.Mode, Measured: on.Total, Bound: backgroundSlack * off.Total, Unit: "s"}
		if !g.met() {
			g.Why = fmt.Sprintf("with background fetch: first output %.2f s, %.1f MB by the exit (%s); without: first output %.2f s, %.1f MB (%s)",
				on.FirstOutput, float64(on.Bytes)/1e6, on.Kinds, off.FirstOutput, float64(off.Bytes)/1e6, off.Kinds)
		}
		gs = append(gs, g)
	}
	return gs
}

// markdownTable is the results tables: every system in its default
// configuration first, then the secondary modes (background fetch off).
func (r *report) markdownTable() string {
	var b strings.Builder
	b.WriteString("Each system in its default configuration:\n\n")
	b.WriteString("| workload | mode | pull s | first output s | total s (min–max) | vs overlayfs | MB from registry | needed MB | requests | peak RSS MiB |\n")
	b.WriteString("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	secondary := false
	for _, m := range r.medians {
		if m.mode.secondary() {
			secondary = true
			continue
		}
		vs := "–"
		if o := r.find(m.Workload, "overlayfs"); o != nil && m.Mode != "overlayfs" {
			vs = fmt.Sprintf("%.2f×", m.Total/o.Total)
		}
		peak := fmt.Sprintf("%.0f", float64(m.PeakRSS)/(1<<20))
		if m.PeakOf == "containerd" {
			peak += " (containerd)"
		}
		fmt.Fprintf(&b, "| %s | %s | %.2f | %.2f | %.2f (%.2f–%.2f) | %s | %.1f | %s | %d | %s |\n",
			m.Workload, m.Mode, m.Pull, m.FirstOutput, m.Total, m.MinTotal, m.MaxTotal, vs, float64(m.Bytes)/1e6, neededMB(m), m.Requests, peak)
	}
	if !secondary {
		return b.String()
	}
	b.WriteString("\nSecondary: lazysnap with background fetch off, so that the bytes are what a start needs:\n\n")
	b.WriteString("| workload | mode | pull s | first output s | total s (min–max) | default mode | its total vs this | MB from registry | needed MB | requests | peak RSS MiB |\n")
	b.WriteString("|---|---|--:|--:|--:|---|--:|--:|--:|--:|--:|\n")
	for _, m := range r.medians {
		if !m.mode.secondary() {
			continue
		}
		vs := "–"
		if d := r.find(m.Workload, m.mode.of); d != nil {
			vs = fmt.Sprintf("%.2f×", d.Total/m.Total)
		}
		fmt.Fprintf(&b, "| %s | %s | %.2f | %.2f | %.2f (%.2f–%.2f) | %s | %s | %.1f | %s | %d | %.0f |\n",
			m.Workload, m.Mode, m.Pull, m.FirstOutput, m.Total, m.MinTotal, m.MaxTotal, m.mode.of, vs, float64(m.Bytes)/1e6, neededMB(m), m.Requests, float64(m.PeakRSS)/(1<<20))
	}
	return b.String()
}

// neededMB is the bytes a lazy start needs, for the tables.
func neededMB(m median) string {
	if m.Bound == 0 {
		return "–"
	}
	return fmt.Sprintf("%.1f", float64(m.Bound)/1e6)
}

func (r *report) markdown() string {
	var b strings.Builder
	disk := ""
	if r.Disk != "" {
		disk = "; " + r.Disk
	}
	fmt.Fprintf(&b, "# Cold start: ordinary pull versus lazy start\n\n")
	fmt.Fprintf(&b, "Generated by `make bench` (benchmarks/coldstart_test.go) on %s, in %s. Machine: %s.\n\n",
		r.Date, r.Elapsed.Round(time.Second), r.Machine+disk)
	fmt.Fprintf(&b, "Every run starts from nothing: a new containerd root and a new snapshotter root (empty cache). "+
		"The CNCF registry runs on loopback behind an emulated WAN adding %.0f ms to every request and to every new connection, "+
		"all responses sharing %.0f Mbit/s. Pull is `ctr images pull` (overlayfs) or `lazysnap pull`; "+
		"first output and total count from the start of the pull to the first byte of the container's stdout and to its exit (`ctr run --rm`). "+
		"Median of %d run(s) per cell. MB from registry counts until the container's exit; "+
		"needed is what the start must fetch: manifest, config, every layer's TOC and the chunks of the files the workload opens (recorded), plus the prioritized ranges.\n\n"+
		"Modes (the headline ones are each system as its users run it, in its default configuration: background fetch on, prioritized files prefetched):\n\n",
		r.RTTms, r.Mbits, r.RunsEach)
	for _, m := range r.cfg.modes {
		fmt.Fprintf(&b, "- `%s`: %s\n", m.name, m.title)
	}
	b.WriteString("\n## Results\n\n")
	b.WriteString(r.markdownTable())
	if len(r.Failures) > 0 {
		b.WriteString("\n**Runs that failed** (not in the medians):\n\n")
		for _, f := range r.Failures {
			fmt.Fprintf(&b, "- %s, %s, run %d: %s\n", f.Workload, f.Mode, f.Run, strings.ReplaceAll(f.Error, "|", "\\|"))
		}
	}
	b.WriteString("\nPeak RSS is VmHWM of the snapshotter process at the end of the run; for overlayfs, of containerd, which unpacks the layers.\n\n")
	b.WriteString("![total time per workload and mode](coldstart.svg)\n\n")

	b.WriteString("## Goals\n\nGoals of lazysnap (issue 13), checked on this run's medians; a miss is reported, not a test failure.")
	if r.absSkipped {
		fmt.Fprintf(&b, " The absolute times (hello ≤ 1.2 s, imports ≤ 2.0 s, hello with a recorded profile ≤ 0.9 s) are for %.0f ms and %d Mbit/s and not checked on this WAN.", float64(goalRTT)/float64(time.Millisecond), goalMbits)
	}
	b.WriteString("\n\n| goal | mode | measured | bound | ratio | |\n|---|---|--:|--:|--:|---|\n")
	for _, g := range r.goals {
		verdict := "met"
		if !g.met() {
			verdict = fmt.Sprintf("**missed by %s**", missedBy(g.ratio()))
		}
		fmt.Fprintf(&b, "| %s | %s | %.3g %s | %.3g %s | %.2f | %s |\n", g.Name, g.Mode, g.Measured, g.Unit, g.Bound, g.Unit, g.ratio(), verdict)
	}
	var misses []goal
	for _, g := range r.goals {
		if !g.met() {
			misses = append(misses, g)
		}
	}
	if len(misses) > 0 {
		b.WriteString("\nWhere the time or the bytes went, for each miss:\n\n")
		for _, g := range misses {
			fmt.Fprintf(&b, "- %s, %s: %s.\n", g.Name, g.Mode, g.Why)
		}
	}

	b.WriteString("\n## Requests\n\nPer cell, of the run nearest the median: what the pull fetched, how many requests were made while no other was in flight " +
		"(each costs a full round trip), and all requests by kind.\n\n| workload | mode | pull MB | pull requests | serial requests | requests by kind |\n|---|---|--:|--:|--:|---|\n")
	for _, m := range r.medians {
		fmt.Fprintf(&b, "| %s | %s | %.1f | %d | %d | %s |\n", m.Workload, m.Mode, float64(m.PullBytes)/1e6, m.PullReqs, m.Serial, m.Kinds)
	}
	if r.images != nil {
		b.WriteString("\n## Workloads and images\n\n| workload | command | image | files opened (recorded) |\n|---|---|---|--:|\n")
		for _, w := range r.cfg.workloads {
			fmt.Fprintf(&b, "| %s | `%s` | %s | %d |\n", w.name, w.title, w.image, len(r.images.files[w.name]))
		}
		fmt.Fprintf(&b, "\nImages: Debian bookworm minbase plus python3 as one layer; `hash` adds a layer with one %d MiB file of random bytes, "+
			"`walk` a layer with %d files of 100–499 random bytes in directories of 100; `torch` is minbase plus Debian's python3-torch as one layer.\n\n", r.BigMiB, r.SmallFiles)
		b.WriteString("| image | variant | layers | MB | TOCs MB | prioritized MB |\n|---|---|--:|--:|--:|--:|\n")
		var keys []string
		for k := range r.images.variants {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			v := r.images.variants[k]
			fmt.Fprintf(&b, "| %s | %s | %d | %.1f | %.2f | %.1f |\n", v.image, v.tag, v.layers, float64(v.size)/1e6, float64(v.toc)/1e6, float64(v.prefetch)/1e6)
		}
		fmt.Fprintf(&b, "\nConversion (`lazysnap convert`, all images of this run): plain %.1f s, with prioritized files %.1f s.\n",
			r.images.convTime["esgz"].Seconds(), r.images.convTime["prio"].Seconds())
	}
	b.WriteString("\n## Reproduce\n\n```sh\nmake bench                                    # all workloads and modes, 3 runs\n" +
		"LAZYSNAP_BENCH_QUICK=1 make bench             # one run each\n" +
		"LAZYSNAP_BENCH_WORKLOADS=hello,imports LAZYSNAP_BENCH_RTT=50ms LAZYSNAP_BENCH_MBITS=20 make bench\n" +
		"# record the files of one workload and convert the image with them first (list in OUT.prioritized):\n" +
		"bin/lazysnap convert -record LAYOUT OUT -- /usr/bin/python3 -c 'print(\"hello\")'\n```\n\nSee benchmarks/README.md for every setting.\n")
	return b.String()
}

// svg is a grouped bar chart of the median totals: one group per workload,
// one bar per mode, the pull part of each bar darker.
func (r *report) svg() string {
	const (
		barW, gap, groupGap  = 34.0, 6.0, 36.0
		left, top, plotH     = 64.0, 70.0, 300.0
		bottom, legendRowH   = 60.0, 18.0
		legendW              = 130.0
		title                = "Cold start: median total time (pull darker), seconds"
		fontAttr             = `font-family="sans-serif" font-size="12"`
		axisColor, gridColor = "#333", "#ddd"
	)
	colors := map[string]string{"overlayfs": "#8c8c8c", "lazy": "#4e79a7", "zstd": "#edc948", "peer-lazy": "#f28e2b", "prioritized": "#59a14f", "peer": "#e15759", "learned": "#b07aa1", "soci": "#76b7b2", "soci-peer": "#ff9da7", "soci-nobg": "#9ad3cf", "soci-peer-nobg": "#fabfd2", "linerate": "#bab0ac", "soci-snap": "#9c755f", "soci-snap-parallel": "#d4a6c8", "soci-learned": "#499894",
		"lazy-nobg": "#a0cbe8", "prioritized-nobg": "#8cd17d"}
	var modes []mode
	for _, m := range r.cfg.modes {
		modes = append(modes, m)
	}
	groupW := float64(len(modes))*(barW+gap) - gap
	width := max(left+float64(len(r.cfg.workloads))*(groupW+groupGap)+20, left+float64(len(modes))*legendW+20)
	height := top + plotH + bottom
	maxT := 0.0
	for _, m := range r.medians {
		maxT = max(maxT, m.Total)
	}
	scale := niceCeil(maxT)
	y := func(v float64) float64 { return top + plotH - v/scale*plotH }

	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f">`+"\n", width, height, width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%.0f" y="20" %s font-size="15" font-weight="bold">%s</text>`+"\n", left, fontAttr, html.EscapeString(title))
	fmt.Fprintf(&b, `<text x="%.0f" y="38" %s fill="#555">%s</text>`+"\n", left, fontAttr,
		html.EscapeString(fmt.Sprintf("+%.0f ms per request, %.0f Mbit/s shared; median of %d run(s); %s", r.RTTms, r.Mbits, r.RunsEach, r.Date)))
	for i, m := range modes {
		x := left + float64(i)*legendW
		fmt.Fprintf(&b, `<rect x="%.0f" y="%.0f" width="12" height="12" fill="%s"/>`, x, 48.0, colors[m.name])
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" %s>%s</text>`+"\n", x+16, 48+legendRowH/2+2, fontAttr, html.EscapeString(m.name))
	}
	for i := 0; i <= 5; i++ {
		v := scale * float64(i) / 5
		fmt.Fprintf(&b, `<line x1="%.0f" y1="%.1f" x2="%.0f" y2="%.1f" stroke="%s"/>`, left, y(v), width-20, y(v), gridColor)
		fmt.Fprintf(&b, `<text x="%.0f" y="%.1f" %s text-anchor="end">%s</text>`+"\n", left-6, y(v)+4, fontAttr, trimFloat(v))
	}
	fmt.Fprintf(&b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="%s"/>`+"\n", left, top, left, top+plotH, axisColor)
	fmt.Fprintf(&b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="%s"/>`+"\n", left, top+plotH, width-20, top+plotH, axisColor)
	for gi, w := range r.cfg.workloads {
		gx := left + groupGap/2 + float64(gi)*(groupW+groupGap)
		for mi, m := range modes {
			md := r.find(w.name, m.name)
			if md == nil {
				continue
			}
			x := gx + float64(mi)*(barW+gap)
			fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.0f" height="%.1f" fill="%s"><title>%s</title></rect>`,
				x, y(md.Total), barW, y(0)-y(md.Total), colors[m.name],
				html.EscapeString(fmt.Sprintf("%s, %s: total %.2f s, pull %.2f s, first output %.2f s", w.name, m.name, md.Total, md.Pull, md.FirstOutput)))
			fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.0f" height="%.1f" fill="black" fill-opacity="0.3"/>`,
				x, y(md.Pull), barW, y(0)-y(md.Pull))
			fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" %s font-size="10" text-anchor="middle">%s</text>`+"\n",
				x+barW/2, y(md.Total)-3, fontAttr, trimFloat(md.Total))
		}
		fmt.Fprintf(&b, `<text x="%.1f" y="%.0f" %s text-anchor="middle">%s</text>`+"\n", gx+groupW/2, top+plotH+18, fontAttr, html.EscapeString(w.name))
	}
	b.WriteString("</svg>\n")
	return b.String()
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}

func trimFloat(v float64) string {
	switch {
	case v >= 10:
		return fmt.Sprintf("%.0f", v)
	case v >= 1:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

// write writes coldstart.md, coldstart.svg and coldstart.json into dir.
func (r *report) write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	for name, data := range map[string]string{"coldstart.md": r.markdown(), "coldstart.svg": r.svg(), "coldstart.json": string(js) + "\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// missedBy says by how much a ratio above 1 misses: in whole percent, or
// with the digits that keep a small miss from reading "0%".
func missedBy(ratio float64) string {
	p := 100 * (ratio - 1)
	switch {
	case p >= 1:
		return fmt.Sprintf("%.0f%%", p)
	case p >= 0.01:
		return fmt.Sprintf("%.2f%%", p)
	}
	return fmt.Sprintf("%.1g%%", p)
}
