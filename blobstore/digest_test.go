package blobstore

import (
	"strings"
	"testing"
)

// FuzzParseDigest: whatever it accepts is 64 lowercase hex characters,
// safe as a file name and a device tag, and prints back to itself.
func FuzzParseDigest(f *testing.F) {
	f.Add("sha256:" + strings.Repeat("ab", 32))
	f.Add(strings.Repeat("0", 64))
	f.Add("sha256:../../etc/passwd")
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDigest(s)
		if err != nil {
			return
		}
		h := d.Hex()
		if len(h) != 64 || strings.Trim(h, "0123456789abcdef") != "" {
			t.Fatalf("accepted %q as %q", s, h)
		}
		if back, err := ParseDigest(d.String()); err != nil || back != d {
			t.Fatalf("%q does not parse back: %v", d.String(), err)
		}
	})
}
