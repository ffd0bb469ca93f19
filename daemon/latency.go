package daemon

import (
	"errors"
	"sync"

	"github.com/erofsd/erofsd/erofstrace"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// readLatency exports, per mount, the time read system calls on the
// mount's files took in the kernel (erofstrace.LatencyMonitor, eBPF on
// the syscall tracepoints): what readers of a lazily served image feel,
// cached reads and reads waiting for erofsd alike. Optional: where BPF is
// not allowed the daemon serves without it.
type readLatency struct {
	mon    *erofstrace.LatencyMonitor
	mounts func() map[string]string // mountpoint → fsid, of the daemon's mounts
	log    logrus.FieldLogger
	desc   *prometheus.Desc

	mu   sync.Mutex
	devs map[string]uint64 // mountpoint → st_dev added to the monitor
}

// newReadLatency opens the monitor; nil (and the reason logged) where the
// kernel does not allow it.
func newReadLatency(mounts func() map[string]string, log logrus.FieldLogger) *readLatency {
	mon, err := erofstrace.OpenLatency(nil)
	if err != nil {
		log.WithError(err).Warn("kernel read latency metrics off")
		return nil
	}
	log.WithField("mechanism", mon.Mechanism()).Info("kernel read latency metrics on")
	return &readLatency{mon: mon, mounts: mounts, log: log, devs: map[string]uint64{},
		desc: prometheus.NewDesc("erofsd_kernel_read_seconds",
			"Time read system calls on the files of an erofsd mount took in the kernel (eBPF on the syscall tracepoints), page cache hits and reads waiting for erofsd alike.",
			[]string{"fsid", "mountpoint"}, nil)}
}

// sync makes the monitor follow the daemon's mounts: new ones added, gone
// ones removed. Called after mounts and unmounts, and at each scrape.
func (l *readLatency) sync() map[uint64][2]string {
	if l == nil {
		return nil
	}
	mounts := l.mounts()
	l.mu.Lock()
	defer l.mu.Unlock()
	byDev := map[uint64][2]string{}
	for mp, fsid := range mounts {
		dev, ok := l.devs[mp]
		if !ok {
			var st unix.Stat_t
			if err := unix.Stat(mp, &st); err != nil {
				continue
			}
			dev = st.Dev
			if err := l.mon.AddDev(dev); err != nil {
				l.log.WithError(err).WithField("mountpoint", mp).Warn("kernel read latency: mount not followed")
				continue
			}
			l.devs[mp] = dev
		}
		byDev[dev] = [2]string{fsid, mp}
	}
	for mp, dev := range l.devs {
		if _, ok := mounts[mp]; !ok {
			if err := l.mon.RemoveDev(dev); err != nil && !errors.Is(err, erofstrace.ErrUnsupported) {
				l.log.WithError(err).WithField("mountpoint", mp).Debug("kernel read latency: removing a mount")
			}
			delete(l.devs, mp)
		}
	}
	return byDev
}

// Describe implements prometheus.Collector.
func (l *readLatency) Describe(ch chan<- *prometheus.Desc) { ch <- l.desc }

// Collect implements prometheus.Collector.
func (l *readLatency) Collect(ch chan<- prometheus.Metric) {
	byDev := l.sync()
	snap, err := l.mon.Snapshot()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(l.desc, err)
		return
	}
	for dev, names := range byDev {
		h := snap[dev].Read
		buckets := make(map[float64]uint64, len(h.Buckets))
		for _, b := range h.Buckets {
			buckets[b.UpperBound] = b.Count
		}
		m, err := prometheus.NewConstHistogram(l.desc, h.Count, h.Sum, buckets, names[0], names[1])
		if err != nil {
			m = prometheus.NewInvalidMetric(l.desc, err)
		}
		ch <- m
	}
}

// Close detaches the monitor.
func (l *readLatency) Close() error {
	if l == nil {
		return nil
	}
	return l.mon.Close()
}
