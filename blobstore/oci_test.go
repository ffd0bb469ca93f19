package blobstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/erofsd/erofsd/internal/testutil/testregistry"
	"github.com/google/go-containerregistry/pkg/authn"
)

// pushBlob uploads data to repo with the registry's own credentials.
func pushBlob(t testing.TB, reg *testregistry.Registry, repo string, data []byte) Digest {
	t.Helper()
	d, err := ParseDigest(reg.PushBlob(t, repo, data))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func randomBlob(seed uint64, n int) []byte {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	b := make([]byte, n)
	rand.NewChaCha8(key).Read(b)
	return b
}

// fast keeps retries quick in tests.
var fast = HTTPOptions{Backoff: time.Millisecond, Retries: 3, Timeout: 10 * time.Second}

func mustOCI(t testing.TB, repo string, opts OCIOptions) *OCI {
	t.Helper()
	o, err := NewOCI(repo, opts)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// checkReads reads b at several ranges, including the end and past it,
// and compares with data.
func checkReads(t *testing.T, b Blob, data []byte) {
	t.Helper()
	ctx := context.Background()
	if b.Size() != int64(len(data)) {
		t.Fatalf("size %d, want %d", b.Size(), len(data))
	}
	for _, r := range []struct{ off, n int }{{0, 1}, {0, 4096}, {12345, 70000}, {len(data) - 4096, 4096}, {len(data) - 1, 1}, {0, len(data)}} {
		if r.off < 0 || r.off+r.n > len(data) {
			continue // a range for bigger blobs
		}
		p := make([]byte, r.n)
		n, err := b.ReadAt(ctx, p, int64(r.off))
		if n != r.n || (err != nil && !(errors.Is(err, io.EOF) && r.off+r.n == len(data))) || !bytes.Equal(p, data[r.off:r.off+r.n]) {
			t.Fatalf("ReadAt(%d, %d): %d %v, bytes equal %v", r.off, r.n, n, err, bytes.Equal(p[:n], data[r.off:r.off+n]))
		}
	}
	// Across the end: a short read with io.EOF.
	p := make([]byte, len(data)+1000)
	tail := min(10, len(data))
	if n, err := b.ReadAt(ctx, p, int64(len(data)-tail)); n != tail || !errors.Is(err, io.EOF) || !bytes.Equal(p[:tail], data[len(data)-tail:]) {
		t.Fatalf("read across the end: %d %v", n, err)
	}
	if n, err := b.ReadAt(ctx, p, int64(len(data))); n != 0 || !errors.Is(err, io.EOF) {
		t.Fatalf("read at the end: %d %v", n, err)
	}
	if _, err := b.ReadAt(ctx, p, int64(len(data)+1)); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("read past the end: %v", err)
	}
	if _, err := b.ReadAt(ctx, p, -1); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("negative offset: %v", err)
	}
}

func TestOCIAnonymous(t *testing.T) {
	reg := testregistry.Start(t, testregistry.Options{})
	data := randomBlob(1, 300_000)
	d := pushBlob(t, reg, "erofsd/layers", data)
	small := []byte("x")
	ds := pushBlob(t, reg, "erofsd/layers", small)

	o := mustOCI(t, "oci://"+reg.Host+"/erofsd/layers", OCIOptions{HTTPOptions: fast, PlainHTTP: true, Keychain: authn.NewMultiKeychain()})
	ctx := context.Background()
	b, err := o.Open(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	checkReads(t, b, data)
	bs, err := o.Open(ctx, ds)
	if err != nil {
		t.Fatal(err)
	}
	checkReads(t, bs, small)

	missing := DigestOf(sha256.Sum256([]byte("not pushed")))
	_, err = o.Open(ctx, missing)
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), missing.String()) || !strings.Contains(err.Error(), reg.Host) {
		t.Fatalf("missing blob: %v (want ErrNotFound naming digest and host)", err)
	}
	// Another repository of the same registry does not have it.
	other := mustOCI(t, reg.Host+"/erofsd/other", OCIOptions{HTTPOptions: fast, PlainHTTP: true})
	if _, err := other.Open(ctx, d); !errors.Is(err, ErrNotFound) {
		t.Fatalf("blob of another repository: %v", err)
	}

	st := o.Stats()
	if st.Requests.Load() == 0 || st.Bytes.Load() < int64(len(data)) || st.NotFound.Load() != 1 || st.Retries.Load() != 0 {
		t.Fatalf("stats: requests %d bytes %d not found %d retries %d", st.Requests.Load(), st.Bytes.Load(), st.NotFound.Load(), st.Retries.Load())
	}
}

func TestOCIPlainHTTPOnlyWhenAsked(t *testing.T) {
	reg := testregistry.Start(t, testregistry.Options{})
	d := pushBlob(t, reg, "r", []byte("hello"))
	// The registry is plain HTTP on loopback: without PlainHTTP the store
	// must not fall back to it (go-containerregistry would, for loopback).
	o := mustOCI(t, reg.Host+"/r", OCIOptions{HTTPOptions: fast})
	start := time.Now()
	_, err := o.Open(context.Background(), d)
	if err == nil {
		t.Fatal("https against a plain HTTP registry succeeded")
	}
	if errors.Is(err, ErrTemporary) || errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), reg.Host) {
		t.Fatalf("want a final error naming the host: %v", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatalf("took %v", time.Since(start))
	}
	if o.Stats().Retries.Load() != 0 {
		t.Fatalf("retried a scheme mismatch %d times", o.Stats().Retries.Load())
	}
	t.Logf("error: %v", err)
}

func TestOCIBasicAuth(t *testing.T) {
	reg := testregistry.Start(t, testregistry.Options{User: "alice", Password: "s3cret"})
	data := randomBlob(2, 100_000)
	d := pushBlob(t, reg, "private/repo", data)
	repo := reg.Host + "/private/repo"
	ctx := context.Background()

	t.Run("keychain in options", func(t *testing.T) {
		kc := staticKeychain{reg.Host: authn.AuthConfig{Username: "alice", Password: "s3cret"}}
		o := mustOCI(t, repo, OCIOptions{HTTPOptions: fast, PlainHTTP: true, Keychain: kc})
		b, err := o.Open(ctx, d)
		if err != nil {
			t.Fatal(err)
		}
		checkReads(t, b, data)
	})
	t.Run("authenticator in options", func(t *testing.T) {
		o := mustOCI(t, repo, OCIOptions{HTTPOptions: fast, PlainHTTP: true,
			Auth: &authn.Basic{Username: "alice", Password: "s3cret"}})
		b, err := o.Open(ctx, d)
		if err != nil {
			t.Fatal(err)
		}
		checkReads(t, b, data)
	})
	t.Run("docker config", func(t *testing.T) {
		// DefaultKeychain reads $HOME/.docker/config.json first and
		// $DOCKER_CONFIG only without it: point both at the test's.
		home := t.TempDir()
		dir := filepath.Join(home, ".docker")
		writeDockerConfig(t, dir, reg.Host, "alice", "s3cret")
		t.Setenv("HOME", home)
		t.Setenv("DOCKER_CONFIG", dir)
		o := mustOCI(t, "oci://"+repo, OCIOptions{HTTPOptions: fast, PlainHTTP: true})
		b, err := o.Open(ctx, d)
		if err != nil {
			t.Fatal(err)
		}
		checkReads(t, b, data)
	})
	t.Run("docker config only", func(t *testing.T) {
		home := t.TempDir() // no .docker here
		dir := t.TempDir()
		writeDockerConfig(t, dir, reg.Host, "alice", "s3cret")
		t.Setenv("HOME", home)
		t.Setenv("DOCKER_CONFIG", dir)
		o := mustOCI(t, "oci://"+repo, OCIOptions{HTTPOptions: fast, PlainHTTP: true})
		if _, err := o.Open(ctx, d); err != nil {
			t.Fatal(err)
		}
	})
	for _, tc := range []struct {
		name string
		kc   authn.Keychain
	}{
		{"wrong password", staticKeychain{reg.Host: authn.AuthConfig{Username: "alice", Password: "wrong"}}},
		{"anonymous", authn.NewMultiKeychain()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := mustOCI(t, repo, OCIOptions{HTTPOptions: fast, PlainHTTP: true, Keychain: tc.kc})
			_, err := o.Open(ctx, d)
			if !errors.Is(err, ErrUnauthorized) || !strings.Contains(err.Error(), reg.Host) {
				t.Fatalf("want ErrUnauthorized naming the host: %v", err)
			}
			if o.Stats().Unauthorized.Load() != 1 || o.Stats().Retries.Load() != 0 {
				t.Fatalf("unauthorized %d retries %d", o.Stats().Unauthorized.Load(), o.Stats().Retries.Load())
			}
		})
	}
}

func writeDockerConfig(t *testing.T, dir, host, user, pass string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
	conf := fmt.Sprintf(`{"auths": {%q: {"auth": %q}}}`, host, auth)
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
}

// staticKeychain maps registry hosts to credentials.
type staticKeychain map[string]authn.AuthConfig

func (k staticKeychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	if c, ok := k[r.RegistryStr()]; ok {
		return authn.FromConfig(c), nil
	}
	return authn.Anonymous, nil
}

func TestOCIMirrors(t *testing.T) {
	upstream := testregistry.Start(t, testregistry.Options{})
	mirror := testregistry.Start(t, testregistry.Options{})
	both := []byte("in the mirror and upstream")
	onlyUp := randomBlob(3, 50_000)
	dBoth := pushBlob(t, upstream, "lib/app", both)
	pushBlob(t, mirror, "lib/app", both)
	dUp := pushBlob(t, upstream, "lib/app", onlyUp)
	dNone := DigestOf(sha256.Sum256([]byte("nowhere")))

	// A port nothing listens on: a dead mirror.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()

	ctx := context.Background()
	o := mustOCI(t, upstream.Host+"/lib/app", OCIOptions{HTTPOptions: fast, PlainHTTP: true,
		Mirrors: []string{"http://" + dead, "http://" + mirror.Host}})

	// In the mirror: served from there, upstream not asked.
	b, err := o.Open(ctx, dBoth)
	if err != nil {
		t.Fatal(err)
	}
	checkReads(t, b, both)
	if got := b.(*remoteBlob).prefer.Load().host; got != mirror.Host {
		t.Fatalf("served by %s, want the mirror %s", got, mirror.Host)
	}
	// Only upstream: the dead mirror and the mirror without it fall through.
	b, err = o.Open(ctx, dUp)
	if err != nil {
		t.Fatal(err)
	}
	checkReads(t, b, onlyUp)
	if got := b.(*remoteBlob).prefer.Load().host; got != upstream.Host {
		t.Fatalf("served by %s, want upstream %s", got, upstream.Host)
	}
	if o.Stats().Fallbacks.Load() == 0 {
		t.Fatal("no fallbacks counted")
	}
	// Nowhere: upstream's answer (not found) wins, naming every host.
	requests, retries := o.Stats().Requests.Load(), o.Stats().Retries.Load()
	_, err = o.Open(ctx, dNone)
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing everywhere: %v", err)
	}
	for _, h := range []string{dead, mirror.Host, upstream.Host} {
		if !strings.Contains(err.Error(), h) {
			t.Errorf("error does not name %s: %v", h, err)
		}
	}
	// The dead mirror's failures are temporary, so it is asked again (3
	// retries); the mirror and upstream answered for good and are not.
	if n := o.Stats().Retries.Load() - retries; n != 3 {
		t.Fatalf("%d retries, want 3", n)
	}
	if n := o.Stats().Requests.Load() - requests; n != 3+3 {
		t.Fatalf("%d requests, want 3 then 1 per retry", n)
	}

	// Through Open with MirrorsByHost, as a daemon configures it.
	s, err := Open("oci+http://"+upstream.Host+"/lib/app", StoreOptions{HTTPOptions: fast,
		MirrorsByHost: map[string][]string{upstream.Host: {"http://" + mirror.Host}}})
	if err != nil {
		t.Fatal(err)
	}
	b, err = s.Open(ctx, dBoth)
	if err != nil {
		t.Fatal(err)
	}
	if got := b.(*remoteBlob).prefer.Load().host; got != mirror.Host {
		t.Fatalf("served by %s, want the mirror", got)
	}
}

func TestOCIUpstreamDownAtStart(t *testing.T) {
	// The store is made while nothing listens; the registry comes up
	// later and the same store then works: no handshake was cached as
	// failed for good.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	host := l.Addr().String()
	l.Close()
	o := mustOCI(t, host+"/r", OCIOptions{HTTPOptions: HTTPOptions{Backoff: time.Millisecond, Retries: 1}, PlainHTTP: true})
	d := DigestOf(sha256.Sum256([]byte("later")))
	if _, err := o.Open(context.Background(), d); !errors.Is(err, ErrTemporary) {
		t.Fatalf("registry down: %v", err)
	}
	reg := testregistry.StartAt(t, testregistry.Options{}, host)
	pushBlob(t, reg, "r", []byte("later"))
	b, err := o.Open(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	checkReads(t, b, []byte("later"))
}

func TestOpenStoreKinds(t *testing.T) {
	for spec, want := range map[string]string{
		"oci://registry.example:5000/a/b": "*blobstore.OCI",
		"oci+http://127.0.0.1:5000/a":     "*blobstore.OCI",
		"https://example.com/blobs":       "*blobstore.HTTP",
		t.TempDir():                       "*blobstore.Local",
	} {
		s, err := Open(spec, StoreOptions{})
		if err != nil {
			t.Fatalf("%s: %v", spec, err)
		}
		if got := fmt.Sprintf("%T", s); got != want {
			t.Errorf("%s: %s, want %s", spec, got, want)
		}
	}
	for _, bad := range []string{"oci://", "oci://host", "oci://host/", "oci:///repo", "oci://host/UPPER", "oci://ho st/r"} {
		if _, err := Open(bad, StoreOptions{}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	for _, m := range []string{"ftp://m", "http://m/prefix", "", "https://", "u@m"} {
		if _, err := NewOCI("h:1/r", OCIOptions{Mirrors: []string{m}}); err == nil {
			t.Errorf("mirror %q accepted", m)
		}
	}
	// Shared counters by kind.
	var st Stats
	s, err := Open(t.TempDir(), StoreOptions{Stats: &st})
	if err != nil {
		t.Fatal(err)
	}
	s.Open(context.Background(), DigestOf(sha256.Sum256(nil)))
	if st.Local.NotFound.Load() != 1 || st.Local.Requests.Load() != 1 {
		t.Fatalf("local stats: %d not found, %d requests", st.Local.NotFound.Load(), st.Local.Requests.Load())
	}
}

// TestOCIMirrorCredentials: a mirror gets its own credentials from the
// keychain, never the upstream's Auth.
func TestOCIMirrorCredentials(t *testing.T) {
	upstream := testregistry.Start(t, testregistry.Options{User: "up", Password: "up-pass"})
	// The mirror would accept the upstream's credentials: it must not
	// be offered them.
	mirror := testregistry.Start(t, testregistry.Options{User: "up", Password: "up-pass"})
	data := []byte("both have it")
	d := pushBlob(t, upstream, "m/c", data)
	pushBlob(t, mirror, "m/c", data)
	ctx := context.Background()
	upAuth := &authn.Basic{Username: "up", Password: "up-pass"}

	o := mustOCI(t, upstream.Host+"/m/c", OCIOptions{HTTPOptions: fast, PlainHTTP: true,
		Mirrors: []string{"http://" + mirror.Host}, Auth: upAuth, Keychain: authn.NewMultiKeychain()})
	b, err := o.Open(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	if got := b.(*remoteBlob).prefer.Load().host; got != upstream.Host {
		t.Fatalf("served by %s: the mirror got the upstream's credentials", got)
	}
	// With the mirror's credentials in the keychain it serves.
	o = mustOCI(t, upstream.Host+"/m/c", OCIOptions{HTTPOptions: fast, PlainHTTP: true,
		Mirrors: []string{"http://" + mirror.Host}, Auth: upAuth,
		Keychain: staticKeychain{mirror.Host: authn.AuthConfig{Username: "up", Password: "up-pass"}}})
	if b, err = o.Open(ctx, d); err != nil {
		t.Fatal(err)
	}
	if got := b.(*remoteBlob).prefer.Load().host; got != mirror.Host {
		t.Fatalf("served by %s, want the mirror", got)
	}
	checkReads(t, b, data)
}
