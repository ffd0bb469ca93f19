package testregistry

import (
	"net/http"
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
