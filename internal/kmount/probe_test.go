package kmount

import (
	"os"
	"path/filepath"
	"testing"
)

// TestMinimalImage mounts the hand-built probe image and checks that the
// kernel sees an empty root directory with the intended mode.
func TestMinimalImage(t *testing.T) {
	if err := Supported(); err != nil {
		t.Skip(err)
	}
	dir := t.TempDir()
	img, mnt := filepath.Join(dir, "probe.erofs"), filepath.Join(dir, "mnt")
	if err := os.WriteFile(img, minimalImage(), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := Mount(Spec{Source: img}, mnt); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := Unmount(mnt); err != nil {
			t.Error(err)
		}
	}()
	ents, err := os.ReadDir(mnt)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 0 {
		t.Errorf("root has %d entries, want none", len(ents))
	}
	fi, err := os.Stat(mnt)
	if err != nil {
		t.Fatal(err)
	}
	if !fi.IsDir() || fi.Mode().Perm() != probeRootMode {
		t.Errorf("root mode %v, want directory %o", fi.Mode(), probeRootMode)
	}
}
