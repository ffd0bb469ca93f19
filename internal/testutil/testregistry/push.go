package testregistry

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"testing"
)

// authorize adds the registry's own credentials to req: basic auth, or
// a bearer token for scope from the token server.
func (r *Registry) authorize(req *http.Request, scope string) error {
	switch {
	case r.tok != nil:
		tok, err := r.tok.token(scope)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	case r.opts.User != "":
		req.SetBasicAuth(r.opts.User, r.opts.Password)
	}
	return nil
}

// PushBlob uploads data to repo with the distribution API's monolithic
// upload (POST, then PUT with the digest), with the registry's own
// credentials, and returns the digest, "sha256:<hex>".
func (r *Registry) PushBlob(t testing.TB, repo string, data []byte) string {
	t.Helper()
	sum := sha256.Sum256(data)
	digest := "sha256:" + hex.EncodeToString(sum[:])
	scope := "repository:" + repo + ":pull,push"
	do := func(method, url string, body []byte) (*http.Response, error) {
		req, err := http.NewRequest(method, url, bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		if err := r.authorize(req, scope); err != nil {
			return nil, err
		}
		req.ContentLength = int64(len(body))
		req.Header.Set("Content-Type", "application/octet-stream")
		resp, err := r.client.Do(req)
		if err != nil {
			return nil, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp, nil
	}
	resp, err := do(http.MethodPost, r.URL()+"/v2/"+repo+"/blobs/uploads/", nil)
	if err == nil && resp.StatusCode != http.StatusAccepted {
		err = fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	if err != nil {
		t.Fatalf("starting upload to %s: %v", repo, err)
	}
	loc, err := resp.Location()
	if err != nil {
		t.Fatal(err)
	}
	q := loc.Query()
	q.Set("digest", digest)
	loc.RawQuery = q.Encode()
	resp, err = do(http.MethodPut, loc.String(), data)
	if err == nil && resp.StatusCode != http.StatusCreated {
		err = fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	if err != nil {
		t.Fatalf("finishing upload to %s: %v", repo, err)
	}
	return digest
}
