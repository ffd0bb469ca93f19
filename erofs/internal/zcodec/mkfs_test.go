package zcodec

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
)

// TestMkfsIdentical checks that our LZ4 and LZ4HC encoders cut the same
// 4 KiB pclusters as mkfs.erofs -zlz4 and -zlz4hc and write
// byte-identical streams, which holds for erofs-utils 1.5 with liblz4
// 1.9.4 (our match finders, parsers and block endings are theirs).
// It runs where those are the installed versions (Debian 12's packages,
// as on our machines and in CI); other versions may choose other, equally
// valid, streams, so elsewhere it runs only with ZCODEC_MKFS_IDENTICAL=1.
func TestMkfsIdentical(t *testing.T) {
	for _, tool := range []string{"mkfs.erofs", "dump.erofs"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skip(err)
		}
	}
	if os.Getenv("ZCODEC_MKFS_IDENTICAL") == "" {
		if v := debianVersion("erofs-utils") + " " + debianVersion("liblz4-1"); !regexp.MustCompile(`^1\.5-\S+ 1\.9\.4-`).MatchString(v) {
			t.Skipf("erofs-utils and liblz4 are %q, not 1.5 and 1.9.4 (set ZCODEC_MKFS_IDENTICAL=1 to compare anyway)", v)
		}
	}
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	files := map[string][]byte{
		"small": textData(30000), // under 64 KiB: liblz4's 16-bit table mode
		"large": append(textData(100000), binaryData(60000)...),
	}
	if err := os.Mkdir(tree, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(tree, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		spec string
		hc   bool
	}{{"lz4", false}, {"lz4hc", true}} {
		img := filepath.Join(dir, c.spec+".img")
		if out, err := exec.Command("mkfs.erofs", "-z"+c.spec, img, tree).CombinedOutput(); err != nil {
			t.Fatalf("mkfs.erofs: %v\n%s", err, out)
		}
		image, err := os.ReadFile(img)
		if err != nil {
			t.Fatal(err)
		}
		for name, data := range files {
			exts := dumpExtents(t, img, "/"+name)
			enc, err := NewEncoder(LZ4, c.hc, -1)
			if err != nil {
				t.Fatal(err)
			}
			dst := make([]byte, 4096)
			identical, total := 0, 0
			for _, x := range exts {
				if x.llen <= 4096 || x.plen != 4096 {
					continue // stored raw
				}
				consumed, n, err := enc.EncodeDestSize(dst, data[x.lstart:])
				if err != nil {
					t.Fatal(err)
				}
				if consumed == x.llen && bytes.Equal(pad(dst[:n], 4096), image[x.pstart:x.pstart+4096]) {
					identical++
				} else {
					t.Errorf("%s %s extent at %d: we consume %d, mkfs.erofs %d; streams differ", c.spec, name, x.lstart, consumed, x.llen)
				}
				total++
				// Continue from mkfs.erofs's cut, to compare like with like.
			}
			t.Logf("%s %s: %d of %d pclusters identical to mkfs.erofs's", c.spec, name, identical, total)
		}
	}
}

type extent struct{ lstart, llen, pstart, plen int }

// dumpExtents lists a file's extents with dump.erofs -e.
func dumpExtents(t *testing.T, img, path string) []extent {
	out, err := exec.Command("dump.erofs", "-e", "--path="+path, img).CombinedOutput()
	if err != nil {
		t.Fatalf("dump.erofs: %v\n%s", err, out)
	}
	re := regexp.MustCompile(`(?m)^\s*\d+:\s+(\d+)\.\.\s*\d+\s*\|\s*(\d+)\s*:\s*(\d+)\.\.\s*\d+\s*\|\s*(\d+)`)
	var exts []extent
	for _, m := range re.FindAllStringSubmatch(string(out), -1) {
		var v [4]int
		for i := range v {
			v[i], _ = strconv.Atoi(m[i+1])
		}
		exts = append(exts, extent{v[0], v[1], v[2], v[3]})
	}
	if len(exts) == 0 {
		t.Fatalf("no extents for %s in:\n%s", path, out)
	}
	return exts
}

// debianVersion is the installed version of a Debian package, or "".
func debianVersion(pkg string) string {
	out, err := exec.Command("dpkg-query", "-W", "-f", "${Version}", pkg).Output()
	if err != nil {
		return ""
	}
	return string(out)
}
