package tests

import (
	"context"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/erofsd/erofsd/erofs/build"
	"github.com/erofsd/erofsd/internal/testutil/require"
	"github.com/erofsd/erofsd/internal/testutil/testimage"
	"github.com/erofsd/erofsd/internal/testutil/testoci"
	"github.com/erofsd/erofsd/internal/testutil/testregistry"
	"github.com/erofsd/erofsd/oci"
	"github.com/erofsd/erofsd/tests/vm"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

const registryGuestScript = `
mkdir -p /data /mnt/reg /ref/reg
mount -t ext4 -o ro /dev/vdb /data
cat >/tmp/registry.yml <<EOF
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: /data/registry
  maintenance:
    uploadpurging:
      enabled: false
    readonly:
      enabled: true
http:
  addr: 127.0.0.1:5000
EOF
docker-registry serve /tmp/registry.yml >/tmp/registry.log 2>&1 &
erofsd --cache-dir /cache/fscache --socket /tmp/erofsd.sock >/tmp/erofsd.log 2>&1 &
for i in $(seq 100); do wget -q -O /dev/null http://127.0.0.1:5000/v2/ && break; sleep 0.1; done
` + guestPrelude + `

mount -t erofs -o ro,loop /data/ref-reg.erofs /ref/reg
check mount-reg ctl mount --plain-http --fsid reg oci://127.0.0.1:5000/app:erofs /mnt/reg
find /mnt/reg >/dev/null
value walk-fetched $(counter backend_fetched_bytes_total)
check tree guesttool cmp /ref/reg /mnt/reg
check stress guesttool stress /mnt/reg/data/big /ref/reg/data/big 8
value digest-failures $(counter chunk_digest_failures_total)
ctl ls
ctl status
echo "--- erofsd log"
tail -n 20 /tmp/erofsd.log
echo "--- registry log"
tail -n 20 /tmp/registry.log
`

// TestErofsdRegistryInVM mounts an image converted into a registry
// through the cachefiles front end of the 6.1 guest kernel: the guest has
// no network device, so the real docker-registry runs inside it on its
// loopback, serving storage written on the host. The mounted tree is
// compared with the merged layers loop-mounted, and 8 readers stream a
// file while chunks come from the registry.
func TestErofsdRegistryInVM(t *testing.T) {
	kernel := vm.Require(t)
	require.Host(t, require.Tool(testregistry.Binary, "docker-registry"))
	registryBin, _ := testregistry.Available()
	d := &dataDir{t: t, dir: t.TempDir()}

	// The registry's storage goes on the guest's data disk.
	reg := testregistry.Start(t, testregistry.Options{Root: filepath.Join(d.dir, "registry")})
	layers := testoci.Layers(t, 24<<20)
	src := testoci.Image(t, layers, "linux", "amd64")
	plain := oci.RemoteOptions{PlainHTTP: true}
	srcRef, _ := oci.ParseReference(reg.Host+"/app:v1", plain)
	if err := remote.Write(srcRef, src); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	converted, err := oci.Convert(ctx, src, oci.ConvertOptions{WorkDir: t.TempDir(), ChunkSize: 256 << 10})
	if err != nil {
		t.Fatal(err)
	}
	dst, _ := oci.ParseLocation("oci://"+reg.Host+"/app:erofs", plain)
	if _, err := oci.Write(ctx, dst, converted, plain); err != nil {
		t.Fatal(err)
	}
	converted.Close()

	// The reference: the same layers merged into a self-contained image.
	testimage.Write(t, filepath.Join(d.dir, "ref-reg.erofs"), build.Options{}, func(ctx context.Context, b *build.Builder) error {
		for _, l := range layers {
			if err := addV1Layer(ctx, b, l); err != nil {
				return err
			}
		}
		return nil
	})

	files := guestBinaries(t)
	// docker-registry is linked against glibc: give the guest its loader
	// and libc where the binary looks for them.
	files = append(files, vm.File{Host: registryBin, Guest: "/bin/docker-registry"})
	for _, lib := range []string{"/lib64/ld-linux-x86-64.so.2", "/lib/x86_64-linux-gnu/libc.so.6"} {
		real, err := filepath.EvalSymlinks(lib)
		if err != nil {
			t.Skipf("docker-registry's %s: %v", lib, err)
		}
		files = append(files, vm.File{Host: real, Guest: lib})
	}
	res := runGuest(t, vm.Config{Kernel: kernel, Script: registryGuestScript, Files: files,
		Disks: []string{d.disk()}, MemoryMB: 2048, CacheDiskMB: 256}, 6*time.Minute, true)
	passed, values := guestResults(res.Output)
	for _, name := range []string{"mount-reg", "tree", "stress"} {
		if !passed[name] {
			t.Errorf("guest check %s did not pass", name)
		}
	}
	if n, ok := values["walk-fetched"]; !ok || n != 0 {
		t.Errorf("a metadata walk fetched %d bytes of file data, want 0", n)
	}
	if values["digest-failures"] != 0 {
		t.Errorf("%d chunk digest failures", values["digest-failures"])
	}
	if t.Failed() || testing.Verbose() {
		t.Logf("guest output:\n%s", res.Output)
	}
}

// addV1Layer applies a go-containerregistry layer to a build.
func addV1Layer(ctx context.Context, b *build.Builder, l v1.Layer) error {
	rc, err := l.Uncompressed()
	if err != nil {
		return err
	}
	defer rc.Close()
	if err := b.AddLayer(ctx, rc); err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, rc)
	return err
}
