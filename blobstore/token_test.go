package blobstore

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/erofsd/erofsd/internal/testutil/testregistry"
	"github.com/google/go-containerregistry/pkg/authn"
)

// TestOCIBearerToken runs the registry with token auth against a test
// token server: the store must do the token flow (through
// go-containerregistry), reuse its token, and map refusals to
// ErrUnauthorized.
func TestOCIBearerToken(t *testing.T) {
	reg := testregistry.Start(t, testregistry.Options{Token: true, User: "bob", Password: "hunter2"})
	data := randomBlob(7, 500_000)
	d := pushBlob(t, reg, "team/app", data)
	ctx := context.Background()
	pushTokens := reg.TokensIssued()

	o := mustOCI(t, reg.Host+"/team/app", OCIOptions{HTTPOptions: fast, PlainHTTP: true,
		Keychain: staticKeychain{reg.Host: authn.AuthConfig{Username: "bob", Password: "hunter2"}}})
	b, err := o.Open(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	checkReads(t, b, data)
	// Concurrent reads share the one token.
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Go(func() {
			p := make([]byte, 4096)
			if _, err := b.ReadAt(ctx, p, int64(i)*4096); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := reg.TokensIssued() - pushTokens; n != 1 {
		t.Fatalf("%d tokens fetched for one store, want 1", n)
	}

	for _, tc := range []struct {
		name string
		kc   authn.Keychain
	}{
		// The token server refuses the credentials: the handshake fails.
		{"wrong password", staticKeychain{reg.Host: authn.AuthConfig{Username: "bob", Password: "nope"}}},
		// Anonymous tokens grant nothing: the registry refuses the read.
		{"anonymous", authn.NewMultiKeychain()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := mustOCI(t, reg.Host+"/team/app", OCIOptions{HTTPOptions: fast, PlainHTTP: true, Keychain: tc.kc})
			_, err := o.Open(ctx, d)
			if !errors.Is(err, ErrUnauthorized) || !strings.Contains(err.Error(), reg.Host) {
				t.Fatalf("want ErrUnauthorized naming the host: %v", err)
			}
			if o.Stats().Retries.Load() != 0 {
				t.Fatalf("an auth refusal was retried %d times", o.Stats().Retries.Load())
			}
			t.Logf("%v", err)
		})
	}
}
