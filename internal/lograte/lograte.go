// Package lograte rate-limits repeated log lines: per key, a token
// bucket lets a burst of lines through and then one per interval, and
// counts what it holds back, so that the next line let through (or a
// periodic summary) can say how many similar lines were suppressed. A
// broken blob read by many processes then costs a few log lines a
// minute, not one per failed request.
//
// Formatter applies a Limiter to a logrus logger without its callers
// knowing: the libraries that log through the logger stay unchanged.
package lograte

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
)

// overflowKey is the shared bucket for keys beyond Limiter's maximum.
const overflowKey = "\x00overflow"

// Limiter is a set of token buckets by key. It is safe for concurrent use.
type Limiter struct {
	burst   float64
	every   time.Duration
	maxKeys int
	now     func() time.Time

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens     float64
	last       time.Time
	suppressed int
}

// New returns a limiter that lets burst lines per key through at once,
// then one per every, tracking at most maxKeys keys (lines under further
// keys share one bucket). Values below 1 are taken as 1.
func New(burst int, every time.Duration, maxKeys int) *Limiter {
	return &Limiter{burst: float64(max(burst, 1)), every: max(every, time.Nanosecond), maxKeys: max(maxKeys, 1),
		now: time.Now, buckets: map[string]*bucket{}}
}

// refill adds the tokens earned since b.last.
func (l *Limiter) refill(b *bucket, now time.Time) {
	if d := now.Sub(b.last); d > 0 {
		b.tokens = min(l.burst, b.tokens+float64(d)/float64(l.every))
		b.last = now
	}
}

// Allow reports whether a line under key may be logged now and, if so,
// how many lines under key were suppressed since the last one allowed
// (to be reported with it; the count is then reset).
func (l *Limiter) Allow(key string) (ok bool, suppressed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	b := l.buckets[key]
	if b == nil {
		if len(l.buckets) >= l.maxKeys {
			l.evict(now)
		}
		if len(l.buckets) >= l.maxKeys {
			key = overflowKey
			b = l.buckets[key]
		}
		if b == nil {
			b = &bucket{tokens: l.burst, last: now}
			l.buckets[key] = b
		}
	}
	l.refill(b, now)
	if b.tokens < 1 {
		b.suppressed++
		return false, 0
	}
	b.tokens--
	n := b.suppressed
	b.suppressed = 0
	return true, n
}

// evict forgets keys whose buckets are full and owe no summary: they
// behave exactly like new keys.
func (l *Limiter) evict(now time.Time) {
	for k, b := range l.buckets {
		l.refill(b, now)
		if b.tokens >= l.burst && b.suppressed == 0 && k != overflowKey {
			delete(l.buckets, k)
		}
	}
}

// Suppressed is a key's count of suppressed lines.
type Suppressed struct {
	Key   string // "" for lines beyond the limiter's maximum of keys
	Count int
}

// Flush returns and resets the counts of keys that suppressed lines and
// have been quiet long enough for their bucket to allow a line again
// (nothing will report their count otherwise), sorted by key. Call it
// periodically, e.g. every interval, to log summaries.
func (l *Limiter) Flush() []Suppressed {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	var out []Suppressed
	for _, k := range slices.Sorted(maps.Keys(l.buckets)) {
		b := l.buckets[k]
		l.refill(b, now)
		if b.suppressed > 0 && b.tokens >= 1 {
			name := k
			if k == overflowKey {
				name = ""
			}
			out = append(out, Suppressed{Key: name, Count: b.suppressed})
			b.suppressed = 0
		}
	}
	return out
}

// Formatter wraps a logrus formatter: entries for which Key returns true
// are rate-limited by Limiter under that key. A suppressed entry formats
// to nothing (logrus then writes nothing); the next entry let through
// carries a "suppressed" field with the count.
type Formatter struct {
	logrus.Formatter
	Limiter *Limiter
	Key     func(*logrus.Entry) (string, bool)
}

// Format implements logrus.Formatter.
func (f *Formatter) Format(e *logrus.Entry) ([]byte, error) {
	key, limited := f.Key(e)
	if !limited {
		return f.Formatter.Format(e)
	}
	ok, n := f.Limiter.Allow(key)
	if !ok {
		return nil, nil
	}
	if n > 0 {
		d := e.Dup() // a copy of the fields, to add one; Dup drops these:
		d.Level, d.Message, d.Caller, d.Buffer = e.Level, e.Message, e.Caller, e.Buffer
		d.Data["suppressed"] = n
		e = d
	}
	return f.Formatter.Format(e)
}

// SimilarKey is a Formatter key for request failures: entries at warning
// level or above are limited, keyed by level, message and every field
// except those in vary (offsets, lengths, pids, request ids) and the
// error text, which often names the offset too. Entries with a
// "suppressed_like" field (the summaries) are not limited.
func SimilarKey(vary ...string) func(*logrus.Entry) (string, bool) {
	return func(e *logrus.Entry) (string, bool) {
		if e.Level > logrus.WarnLevel {
			return "", false
		}
		if _, summary := e.Data["suppressed_like"]; summary {
			return "", false
		}
		var b strings.Builder
		b.WriteString(e.Level.String() + " " + e.Message)
		for _, k := range slices.Sorted(maps.Keys(e.Data)) {
			if k == logrus.ErrorKey || slices.Contains(vary, k) {
				continue
			}
			fmt.Fprintf(&b, " %s=%v", k, e.Data[k])
		}
		return b.String(), true
	}
}
