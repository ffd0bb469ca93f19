// Package metrics exposes erofsd's counters as Prometheus metrics. The
// serving core, the front ends and the blob stores keep plain atomic
// counters and describe them once (package counters); a collector reads
// them at scrape time, so nothing is counted twice.
// Latencies are histograms the daemon passes to the core and front ends
// as observers. Label values are fixed small sets (front end, request
// type, result): no digests, paths or image names.
package metrics

import (
	"runtime"
	"sync"

	"github.com/erofsd/erofsd/internal/counters"
	"github.com/erofsd/erofsd/ondemand"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

const ns = "erofsd"

// Histograms are the latency observers to hand to the core and the front
// ends.
type Histograms struct {
	CachefilesRead ondemand.Observer // READ arrival to completion
	FanotifyRead   ondemand.Observer // event arrival to answer
	BackendFetch   ondemand.Observer // one chunk fetch from a blob store
}

// NewHistograms registers the latency histograms.
func NewHistograms(reg prometheus.Registerer) *Histograms {
	read := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: ns, Name: "read_duration_seconds",
		Help:    "Time from a kernel read request (cachefiles READ or fanotify pre-access event) to its answer.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
	}, []string{"frontend"})
	fetch := prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: ns, Name: "backend_fetch_duration_seconds",
		Help:    "Time to fetch one chunk from a blob store (each attempt).",
		Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
	})
	reg.MustRegister(read, fetch)
	return &Histograms{
		CachefilesRead: read.WithLabelValues("cachefiles"),
		FanotifyRead:   read.WithLabelValues("fanotify"),
		BackendFetch:   fetch,
	}
}

// Register registers a collector of the sources' counters (each
// component describes its own, see package counters), the build info and
// the Go and process collectors.
func Register(reg prometheus.Registerer, version string, sources ...counters.Source) {
	reg.MustRegister(&collector{sources: sources},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: ns, Name: "build_info", Help: "Build information; the value is 1.",
		ConstLabels: prometheus.Labels{"version": version, "goversion": runtime.Version()},
	})
	info.Set(1)
	reg.MustRegister(info)
}

// collector turns counters.Values into metrics at scrape time; the
// sources describe their families (a family several sources report is
// described once).
type collector struct {
	sources []counters.Source

	mu    sync.Mutex
	descs map[*counters.Desc]*prometheus.Desc
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	seen := map[*counters.Desc]bool{}
	for _, s := range c.sources {
		if s == nil {
			continue
		}
		s.Describe(func(d *counters.Desc) {
			if !seen[d] {
				seen[d] = true
				ch <- c.desc(d)
			}
		})
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.sources {
		if s == nil {
			continue
		}
		s.Counters(func(v counters.Value) {
			kind := prometheus.CounterValue
			if v.Desc.Gauge {
				kind = prometheus.GaugeValue
			}
			m, err := prometheus.NewConstMetric(c.desc(v.Desc), kind, float64(v.Value), v.Labels...)
			if err != nil {
				m = prometheus.NewInvalidMetric(c.desc(v.Desc), err)
			}
			ch <- m
		})
	}
}

func (c *collector) desc(d *counters.Desc) *prometheus.Desc {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.descs == nil {
		c.descs = map[*counters.Desc]*prometheus.Desc{}
	}
	pd, ok := c.descs[d]
	if !ok {
		pd = prometheus.NewDesc(ns+"_"+d.Name, d.Help, d.Labels, nil)
		c.descs[d] = pd
	}
	return pd
}
