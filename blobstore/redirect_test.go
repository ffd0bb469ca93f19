package blobstore

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/erofsd/erofsd/internal/testutil/require"
	"github.com/erofsd/erofsd/internal/testutil/testregistry"
	"github.com/google/go-containerregistry/pkg/authn"
)

// TestOCIRedirectToStorage runs the registry with its storage redirect
// middleware, as registries on object stores answer blob reads: a 307 to
// another host. The store must follow it, keep Range, and not send the
// registry's credentials there.
func TestOCIRedirectToStorage(t *testing.T) {
	require.Host(t, require.Tool(testregistry.Binary, "docker-registry"))
	root := t.TempDir()
	type seen struct{ method, rng, auth string }
	var mu sync.Mutex
	var log []seen
	files := http.FileServer(http.Dir(root))
	storage := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		log = append(log, seen{r.Method, r.Header.Get("Range"), r.Header.Get("Authorization")})
		mu.Unlock()
		files.ServeHTTP(w, r)
	}))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	storage.Listener = l
	storage.Start()
	defer storage.Close()
	// "localhost" is another host than the registry's 127.0.0.1 as far as
	// HTTP clients are concerned.
	_, port, _ := net.SplitHostPort(l.Addr().String())
	storageURL := "http://localhost:" + port

	reg := testregistry.Start(t, testregistry.Options{User: "u", Password: "p", Root: root, RedirectTo: storageURL})
	data := randomBlob(5, 200_000)
	d := pushBlob(t, reg, "redir/repo", data)

	o := mustOCI(t, reg.Host+"/redir/repo", OCIOptions{HTTPOptions: fast, PlainHTTP: true,
		Auth: &authn.Basic{Username: "u", Password: "p"}})
	b, err := o.Open(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	checkReads(t, b, data)

	mu.Lock()
	defer mu.Unlock()
	gets := 0
	for _, s := range log {
		if s.auth != "" {
			t.Errorf("storage got Authorization %q on a %s", s.auth, s.method)
		}
		if s.method == http.MethodGet {
			gets++
			if !strings.HasPrefix(s.rng, "bytes=") {
				t.Errorf("storage GET without Range")
			}
		}
	}
	if gets == 0 {
		t.Fatalf("the registry did not redirect reads to storage (%d requests there)", len(log))
	}
}
