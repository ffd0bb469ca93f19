package daemon

import (
	"errors"
	"strings"
	"testing"

	"github.com/erofsd/erofsd/blobstore"
	"github.com/erofsd/erofsd/internal/control"
	"github.com/erofsd/erofsd/ondemand"
	"github.com/erofsd/erofsd/prefetchlist"
)

func TestPrefetchOptions(t *testing.T) {
	p := newPrefetcher(nil, Config{Prefetch: "off", PrefetchRate: 1 << 20}, nil)
	for _, c := range []struct {
		prefetch string
		list     []prefetchlist.Entry
		run      bool
		whole    bool
		bad      bool
	}{
		{"", nil, false, false, false},
		{"", prefetchlist.Files("a"), true, false, false},
		{"whole", nil, true, true, false},
		{"whole", prefetchlist.Files("a"), true, true, false},
		{"off", nil, false, false, false},
		{"off", prefetchlist.Files("a"), false, false, true},
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

// TestSameBlobs: a registry image's manifest must list the blobs its
// bootstrap (verified by digest) names, in order.
func TestSameBlobs(t *testing.T) {
	d := func(c byte) blobstore.Digest {
		dg, _ := blobstore.ParseDigest(strings.Repeat(string(c), 64))
		return dg
	}
	im := &ondemand.Image{Blobs: []ondemand.BlobInfo{{Digest: d('a')}, {Digest: d('b')}}}
	for _, tc := range []struct {
		manifest []blobstore.Digest
		ok       bool
	}{
		{[]blobstore.Digest{d('a'), d('b')}, true},
		{[]blobstore.Digest{d('b'), d('a')}, false},
		{[]blobstore.Digest{d('a')}, false},
		{[]blobstore.Digest{d('a'), d('b'), d('c')}, false},
		{[]blobstore.Digest{d('a'), d('c')}, false},
		{[]blobstore.Digest{}, false},
	} {
		if err := sameBlobs(im, tc.manifest); (err == nil) != tc.ok {
			t.Errorf("%v: %v", tc.manifest, err)
		}
	}
}
