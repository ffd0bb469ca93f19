package testregistry

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

func TestStartAnonymousAndBasicAuth(t *testing.T) {
	for _, tc := range []struct {
		name       string
		opts       Options
		user, pass string
		want       int
	}{
		{"anonymous", Options{}, "", "", http.StatusOK},
		{"auth without credentials", Options{User: "u", Password: "p"}, "", "", http.StatusUnauthorized},
		{"auth with wrong password", Options{User: "u", Password: "p"}, "u", "x", http.StatusUnauthorized},
		{"auth with credentials", Options{User: "u", Password: "p"}, "u", "p", http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := Start(t, tc.opts)
			req, _ := http.NewRequest(http.MethodGet, r.URL()+"/v2/", nil)
			if tc.user != "" {
				req.SetBasicAuth(tc.user, tc.pass)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("GET /v2/: HTTP %d, want %d", resp.StatusCode, tc.want)
			}
		})
	}
}

func TestTokenAuthAndPush(t *testing.T) {
	r := Start(t, Options{Token: true, User: "u", Password: "p"})
	resp, err := http.Get(r.URL() + "/v2/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if c := resp.Header.Get("WWW-Authenticate"); resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(c, "Bearer realm=\""+r.TokenRealm()) {
		t.Fatalf("GET /v2/ without a token: HTTP %d, challenge %q", resp.StatusCode, c)
	}
	d := r.PushBlob(t, "a/b", []byte("data"))
	if r.TokensIssued() == 0 || !strings.HasPrefix(d, "sha256:") {
		t.Fatalf("push: %s, %d tokens", d, r.TokensIssued())
	}
	// A token for the repository reads the blob back.
	req, _ := http.NewRequest(http.MethodGet, r.URL()+"/v2/a/b/blobs/"+d, nil)
	if err := r.authorize(req, "repository:a/b:pull"); err != nil {
		t.Fatal(err)
	}
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "data" {
		t.Fatalf("read back: HTTP %d %q", resp.StatusCode, body)
	}
}
