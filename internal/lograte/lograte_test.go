package lograte

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

func TestLimiter(t *testing.T) {
	type step struct {
		advance    time.Duration
		key        string
		ok         bool
		suppressed int
	}
	for _, tc := range []struct {
		name        string
		burst, keys int
		every       time.Duration
		steps       []step
		flushAfter  time.Duration
		wantFlushed []Suppressed
	}{
		{name: "burst then one per interval", burst: 2, keys: 10, every: time.Second, steps: []step{
			{0, "a", true, 0}, {0, "a", true, 0}, {0, "a", false, 0}, {0, "a", false, 0},
			{999 * time.Millisecond, "a", false, 0},
			{time.Millisecond, "a", true, 3}, // one token back: the count comes with it
			{0, "a", false, 0},
		}, flushAfter: time.Second, wantFlushed: []Suppressed{{"a", 1}}},
		{name: "keys are independent", burst: 1, keys: 10, every: time.Minute, steps: []step{
			{0, "a", true, 0}, {0, "b", true, 0}, {0, "a", false, 0}, {0, "b", false, 0}, {0, "b", false, 0},
		}, flushAfter: time.Minute, wantFlushed: []Suppressed{{"a", 1}, {"b", 2}}},
		{name: "no summary before the bucket refills", burst: 1, keys: 10, every: time.Minute, steps: []step{
			{0, "a", true, 0}, {0, "a", false, 0},
		}, flushAfter: 30 * time.Second, wantFlushed: nil},
		{name: "nothing suppressed, nothing flushed", burst: 3, keys: 10, every: time.Second, steps: []step{
			{0, "a", true, 0}, {time.Second, "a", true, 0},
		}, flushAfter: time.Hour, wantFlushed: nil},
		{name: "idle keys are evicted for new ones", burst: 1, keys: 2, every: time.Second, steps: []step{
			{0, "a", true, 0}, {0, "b", true, 0},
			{2 * time.Second, "c", true, 0}, // a and b are full again: forgotten
			{0, "c", false, 0},
		}, flushAfter: time.Second, wantFlushed: []Suppressed{{"c", 1}}},
		{name: "keys beyond the maximum share a bucket", burst: 1, keys: 2, every: time.Minute, steps: []step{
			{0, "a", true, 0}, {0, "a", false, 0}, {0, "b", true, 0}, {0, "b", false, 0},
			{0, "c", true, 0}, {0, "d", false, 0}, {0, "e", false, 0},
		}, flushAfter: time.Minute, wantFlushed: []Suppressed{{"", 2}, {"a", 1}, {"b", 1}}},
		{name: "zero settings are taken as one", burst: 0, keys: 0, every: 0, steps: []step{
			{0, "a", true, 0}, {0, "b", true, 0},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := &fakeClock{t: time.Unix(1000, 0)}
			l := New(tc.burst, tc.every, tc.keys)
			l.now = clk.now
			for i, s := range tc.steps {
				clk.t = clk.t.Add(s.advance)
				ok, n := l.Allow(s.key)
				if ok != s.ok || n != s.suppressed {
					t.Fatalf("step %d (%s): Allow = %v, %d; want %v, %d", i, s.key, ok, n, s.ok, s.suppressed)
				}
			}
			clk.t = clk.t.Add(tc.flushAfter)
			got := l.Flush()
			if fmt.Sprint(got) != fmt.Sprint(tc.wantFlushed) {
				t.Fatalf("Flush = %v, want %v", got, tc.wantFlushed)
			}
			if again := l.Flush(); len(again) != 0 {
				t.Fatalf("second Flush = %v", again)
			}
		})
	}
}

func TestFormatter(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1000, 0)}
	lim := New(2, time.Minute, 100)
	lim.now = clk.now
	var out bytes.Buffer
	log := logrus.New()
	log.Out = &out
	log.SetFormatter(&Formatter{Formatter: &logrus.TextFormatter{DisableTimestamp: true}, Limiter: lim, Key: SimilarKey("off", "len")})
	fail := func(image string, off int) {
		log.WithFields(logrus.Fields{"image": image, "source": "blob1", "off": off, "len": 4096}).
			WithError(fmt.Errorf("chunk at %d: %w", off, errors.New("digest mismatch"))).Warn("READ failed")
	}
	for off := 0; off < 10; off++ {
		fail("img", off*4096)
	}
	fail("other", 0)             // another image: its own key
	log.Info("image registered") // info lines are never limited
	log.Info("image registered")
	log.Info("image registered")
	clk.t = clk.t.Add(time.Minute)
	fail("img", 1<<20)

	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 7 {
		t.Fatalf("%d lines:\n%s", len(lines), out.String())
	}
	for i, want := range []string{"off=0 ", "off=4096 ", "image=other", "image registered", "image registered", "image registered", "suppressed=8"} {
		if !strings.Contains(lines[i], want) {
			t.Errorf("line %d %q lacks %q", i, lines[i], want)
		}
	}
	if !strings.Contains(lines[6], `level=warning msg="READ failed"`) || !strings.Contains(lines[6], "off=1048576") || !strings.Contains(lines[6], "digest mismatch") {
		t.Errorf("the line after suppression lost its level, message or fields: %q", lines[6])
	}
	// Summaries go through unlimited.
	for i := 0; i < 5; i++ {
		log.WithField("suppressed_like", "x").Warn("suppressed 3 similar messages")
	}
	if n := strings.Count(out.String(), "similar messages"); n != 5 {
		t.Errorf("%d summaries written, want 5", n)
	}
}
