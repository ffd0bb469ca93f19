package hostcap

import (
	"errors"
	"io/fs"
	"testing"
)

func TestMissing(t *testing.T) {
	err := Missingf("erofs file-backed mounts", "trial mount: %w", fs.ErrPermission)
	var m *Missing
	if !errors.Is(err, ErrMissing) || !errors.As(err, &m) || !errors.Is(err, fs.ErrPermission) {
		t.Fatalf("%v: not a Missing wrapping its cause", err)
	}
	if got := err.Error(); got != "erofs file-backed mounts: trial mount: permission denied" {
		t.Errorf("message %q", got)
	}
	wrapped := errors.Join(errors.New("context"), err)
	if !errors.Is(wrapped, ErrMissing) {
		t.Error("a wrapped Missing is not found")
	}
	if errors.Is(errors.New("other"), ErrMissing) {
		t.Error("an ordinary error counts as missing")
	}
}
