// Package testregistry runs the real docker-registry (the CNCF
// distribution registry, Debian package docker-registry) on 127.0.0.1 for
// tests: an unused port, storage in a test temp dir, and optionally
// htpasswd basic auth. Tests that need it skip when the binary is absent.
package testregistry

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/erofsd/erofsd/internal/testutil/require"
	"golang.org/x/crypto/bcrypt"
)

// Binary is the registry executable looked up on PATH.
const Binary = "docker-registry"

// Options configure a registry.
type Options struct {
	// User and Password, when set, turn on htpasswd basic auth, or with
	// Token the account the token server accepts.
	User, Password string
	// Token turns on bearer token auth (distribution's "token" auth):
	// a token server on loopback issues signed JWTs for User/Password
	// and empty tokens to anonymous clients.
	Token bool
	// Root is the storage directory (default: a test temp dir). Two
	// registries may share one to serve the same blobs.
	Root string
	// RedirectTo, when set, makes blob reads answer with a redirect to
	// RedirectTo + the blob's path under Root (the storage "redirect"
	// middleware), as registries backed by object stores do. Serve Root
	// there, e.g. with http.FileServer.
	RedirectTo string
	// TLS serves https with a fresh self-signed certificate for
	// 127.0.0.1 (Registry.CAFile); clients must trust it explicitly.
	TLS bool
}

// Registry is a running registry.
type Registry struct {
	Host   string // 127.0.0.1:PORT
	Root   string // storage directory
	CAFile string // with TLS: the PEM certificate to trust
	cmd    *exec.Cmd
	client *http.Client // trusts CAFile
	opts   Options
	tok    *tokenServer
}

// TokensIssued returns how many tokens the token server issued (0
// without Token auth).
func (r *Registry) TokensIssued() int64 {
	if r.tok == nil {
		return 0
	}
	return r.tok.issued.Load()
}

// TokenRealm returns the token server's realm URL ("" without Token).
func (r *Registry) TokenRealm() string {
	if r.tok == nil {
		return ""
	}
	return r.tok.realm
}

// URL returns http://HOST, or https://HOST with TLS.
func (r *Registry) URL() string {
	if r.CAFile != "" {
		return "https://" + r.Host
	}
	return "http://" + r.Host
}

// Available reports whether the registry binary is installed.
func Available() (string, bool) {
	p, err := exec.LookPath(Binary)
	return p, err == nil
}

// Start runs a registry for the test's lifetime; it skips the test when
// docker-registry is not installed.
func Start(t testing.TB, opts Options) *Registry {
	t.Helper()
	return StartAt(t, opts, "")
}

// StartAt is Start on a given address (HOST:PORT; "" picks a free
// loopback port), for tests of clients made before their registry runs.
func StartAt(t testing.TB, opts Options, host string) *Registry {
	t.Helper()
	require.Host(t, require.Tool(Binary, "docker-registry"))
	bin, _ := Available()
	dir := t.TempDir()
	root := opts.Root
	if root == "" {
		root = filepath.Join(dir, "storage")
	}
	if host == "" {
		var err error
		if host, err = freeAddr(); err != nil {
			t.Fatal(err)
		}
	}
	var auth string
	var tok *tokenServer
	if opts.Token {
		bundle := filepath.Join(dir, "token-root.pem")
		var err error
		if tok, err = newTokenServer(opts.User, opts.Password, bundle); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(tok.close)
		auth = tok.config(bundle)
	} else if opts.User != "" {
		hash, err := bcrypt.GenerateFromPassword([]byte(opts.Password), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		htpasswd := filepath.Join(dir, "htpasswd")
		if err := os.WriteFile(htpasswd, []byte(opts.User+":"+string(hash)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		auth = fmt.Sprintf("auth:\n  htpasswd:\n    realm: erofsd-test\n    path: %s\n", htpasswd)
	}
	if opts.RedirectTo != "" {
		auth += fmt.Sprintf("middleware:\n  storage:\n    - name: redirect\n      options:\n        baseurl: %s\n", opts.RedirectTo)
	}
	var tlsConf, caFile string
	client := http.DefaultClient
	if opts.TLS {
		var err error
		caFile = filepath.Join(dir, "registry.crt")
		keyFile := filepath.Join(dir, "registry.key")
		if client, err = selfSigned(caFile, keyFile); err != nil {
			t.Fatal(err)
		}
		tlsConf = fmt.Sprintf("  tls:\n    certificate: %s\n    key: %s\n", caFile, keyFile)
	}
	config := fmt.Sprintf(`version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: %s
%s%s`, root, host, tlsConf, auth)
	confPath := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(confPath, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", confPath)
	logPath := filepath.Join(dir, "registry.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		logFile.Close()
		t.Fatalf("starting %s: %v", bin, err)
	}
	r := &Registry{Host: host, Root: root, CAFile: caFile, cmd: cmd, client: client, opts: opts, tok: tok}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		logFile.Close()
		if t.Failed() {
			t.Logf("registry log:\n%s", tail(logPath, 30))
		}
	})
	if err := r.wait(10 * time.Second); err != nil {
		t.Fatalf("registry on %s: %v\n%s", host, err, tail(logPath, 30))
	}
	return r
}

// wait polls /v2/ until the registry answers (200, or 401 with auth).
func (r *Registry) wait(limit time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, r.URL()+"/v2/", nil)
		resp, err := r.client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusUnauthorized {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not answering after %v (last error %v)", limit, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// freeAddr picks an unused loopback port. The registry binds it a moment
// later; a race with another process is possible but unlikely.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}
