// Package counters lets a component describe its counters once, for
// every consumer: the Prometheus collector (package metrics) and
// erofsctl status both read the same descriptions and values. A
// component keeps plain atomic counters and reports them, on request,
// as Values of Descs declared once per family.
package counters

import (
	"fmt"
	"strings"
)

// Desc describes a family of values: one Prometheus metric name, with
// the same help, kind and label names wherever it is reported (several
// components may report values of one family, each with its labels).
type Desc struct {
	Name   string // without the erofsd_ prefix, e.g. "kernel_requests_total"
	Help   string
	Gauge  bool     // a level (in flight, bytes used); else a counter that only grows
	Labels []string // label names, in the order Values give them
}

// Value is one reported value of a family.
type Value struct {
	Desc   *Desc
	Labels []string // label values, in Desc.Labels order
	Value  int64
}

// Key names the value in erofsctl status:
// name{label=value,...} with the labels in Desc order, or the bare name.
func (v Value) Key() string {
	if len(v.Desc.Labels) == 0 {
		return v.Desc.Name
	}
	var b strings.Builder
	b.WriteString(v.Desc.Name)
	b.WriteByte('{')
	for i, l := range v.Desc.Labels {
		if i > 0 {
			b.WriteByte(',')
		}
		val := ""
		if i < len(v.Labels) {
			val = v.Labels[i]
		}
		fmt.Fprintf(&b, "%s=%s", l, val)
	}
	b.WriteByte('}')
	return b.String()
}

// Source is a component that reports its values: Describe names every
// family it may report (once each), Counters reports the values now.
type Source interface {
	Describe(describe func(*Desc))
	Counters(emit func(Value))
}

// Func is a Source of the families Descs, reported by Emit.
type Func struct {
	Descs []*Desc
	Emit  func(emit func(Value))
}

// Describe names f.Descs.
func (f Func) Describe(describe func(*Desc)) {
	for _, d := range f.Descs {
		describe(d)
	}
}

// Counters calls f.Emit.
func (f Func) Counters(emit func(Value)) { f.Emit(emit) }

// Emitter is a helper for Counters methods: e.Add(desc, v, labels...).
type Emitter func(Value)

// Add reports value v of d with the given label values.
func (e Emitter) Add(d *Desc, v int64, labels ...string) {
	e(Value{Desc: d, Labels: labels, Value: v})
}

// Map collects the values of sources under their Keys (erofsctl status).
func Map(sources ...Source) map[string]int64 {
	out := map[string]int64{}
	for _, s := range sources {
		if s == nil {
			continue
		}
		s.Counters(func(v Value) { out[v.Key()] += v.Value })
	}
	return out
}
