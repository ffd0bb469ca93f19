package daemon

import (
	"errors"
	"testing"

	"github.com/erofsd/erofsd/internal/control"
)

func TestPrefetchOptions(t *testing.T) {
	p := newPrefetcher(nil, "off", 1<<20, nil)
	for _, c := range []struct {
		prefetch string
		list     []string
		run      bool
		whole    bool
		bad      bool
	}{
		{"", nil, false, false, false},
		{"", []string{"a"}, true, false, false},
		{"whole", nil, true, true, false},
		{"whole", []string{"a"}, true, true, false},
		{"off", nil, false, false, false},
		{"off", []string{"a"}, false, false, true},
		{"lazy", nil, false, false, true},
	} {
		opts, run, err := p.options(control.MountRequest{Prefetch: c.prefetch, PrefetchList: c.list})
		if bad := errors.Is(err, control.ErrBadRequest); bad != c.bad || run != c.run || opts.Whole != c.whole {
			t.Errorf("%+v: run %v whole %v err %v", c, run, opts.Whole, err)
		}
		if run && opts.Limiter == nil {
			t.Errorf("%+v: no limiter", c)
		}
	}
	p.mode = "whole"
	if opts, run, _ := p.options(control.MountRequest{}); !run || !opts.Whole {
		t.Error("--prefetch whole is not the default of mounts")
	}
}
