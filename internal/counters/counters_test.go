package counters

import "testing"

func TestKeyAndMap(t *testing.T) {
	req := &Desc{Name: "kernel_requests_total", Labels: []string{"frontend", "type", "result"}}
	images := &Desc{Name: "images", Gauge: true}
	src := Func{Descs: []*Desc{req, images}, Emit: func(emit func(Value)) {
		e := Emitter(emit)
		e.Add(req, 3, "cachefiles", "read", "ok")
		e.Add(req, 1, "cachefiles", "read", "error")
		e.Add(images, 2)
	}}
	got := Map(src, nil, src)
	want := map[string]int64{
		"kernel_requests_total{frontend=cachefiles,type=read,result=ok}":    6,
		"kernel_requests_total{frontend=cachefiles,type=read,result=error}": 2,
		"images": 4,
	}
	if len(got) != len(want) {
		t.Fatalf("got %v", got)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %d, want %d (all: %v)", k, got[k], v, got)
		}
	}
	if k := (Value{Desc: req, Labels: []string{"fanotify"}}).Key(); k != "kernel_requests_total{frontend=fanotify,type=,result=}" {
		t.Errorf("short labels: %s", k)
	}
}
