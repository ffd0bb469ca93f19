// Package units parses byte counts as the tools take them on the command
// line and in config files: a number of bytes with an optional binary
// unit, K, M, G or T (case-insensitive), as in "512K" or "20G".
package units

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// ParseBytes returns the bytes s names; negative numbers and values that
// overflow an int64 are refused.
func ParseBytes(s string) (int64, error) {
	t := strings.TrimSpace(s)
	mult := int64(1)
	if n := len(t); n > 0 {
		switch strings.ToUpper(t[n-1:]) {
		case "K":
			mult = 1 << 10
		case "M":
			mult = 1 << 20
		case "G":
			mult = 1 << 30
		case "T":
			mult = 1 << 40
		}
		if mult != 1 {
			t = t[:n-1]
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("bad size %q: want bytes, or a number with K, M, G or T", s)
	}
	return n * mult, nil
}

// Bytes is a flag.Value of ParseBytes's form.
type Bytes int64

func (b *Bytes) String() string { return strconv.FormatInt(int64(*b), 10) }

// Set parses s.
func (b *Bytes) Set(s string) error {
	n, err := ParseBytes(s)
	if err != nil {
		return err
	}
	*b = Bytes(n)
	return nil
}
