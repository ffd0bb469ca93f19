package blobstore

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/erofsd/erofsd/internal/testutil/testregistry"
	"github.com/google/go-containerregistry/pkg/authn"
)

// TestOCITLS runs the registry over https with a self-signed
// certificate: refused by default, trusted with its CA file, accepted
// unverified only with Insecure.
func TestOCITLS(t *testing.T) {
	reg := testregistry.Start(t, testregistry.Options{TLS: true, User: "u", Password: "p"})
	data := randomBlob(8, 70_000)
	d := pushBlob(t, reg, "tls/repo", data)
	ctx := context.Background()
	creds := staticKeychain{reg.Host: authn.AuthConfig{Username: "u", Password: "p"}}
	repo := "oci://" + reg.Host + "/tls/repo"

	o := mustOCI(t, repo, OCIOptions{HTTPOptions: fast, Keychain: creds})
	_, err := o.Open(ctx, d)
	if !errors.Is(err, ErrUnauthorized) || !strings.Contains(err.Error(), "TLS verification") || !strings.Contains(err.Error(), reg.Host) {
		t.Fatalf("untrusted certificate: %v", err)
	}
	if o.Stats().Retries.Load() != 0 {
		t.Fatal("a TLS verification failure was retried")
	}

	for name, opts := range map[string]HTTPOptions{
		"CA file":  {CAFile: reg.CAFile},
		"insecure": {Insecure: true},
	} {
		t.Run(name, func(t *testing.T) {
			opts.Backoff, opts.Retries = fast.Backoff, fast.Retries
			o := mustOCI(t, repo, OCIOptions{HTTPOptions: opts, Keychain: creds})
			b, err := o.Open(ctx, d)
			if err != nil {
				t.Fatal(err)
			}
			checkReads(t, b, data)
		})
	}

	// Plain HTTP to a TLS registry fails cleanly, without retries.
	o = mustOCI(t, repo, OCIOptions{HTTPOptions: fast, PlainHTTP: true, Keychain: creds})
	if _, err := o.Open(ctx, d); err == nil || errors.Is(err, ErrTemporary) {
		t.Fatalf("plain HTTP to a TLS registry: %v", err)
	}
}

// switchKeychain answers with whatever credentials it holds now, as the
// docker config does after a docker login.
type switchKeychain struct {
	cfg atomic.Pointer[authn.AuthConfig]
}

func (k *switchKeychain) Resolve(authn.Resource) (authn.Authenticator, error) {
	return authn.FromConfig(*k.cfg.Load()), nil
}

// TestOCICredentialsFixedLater: after a refusal the store resolves
// credentials again, so fixing them (a docker login) needs no restart.
func TestOCICredentialsFixedLater(t *testing.T) {
	for _, token := range []bool{false, true} {
		name := "basic"
		if token {
			name = "token"
		}
		t.Run(name, func(t *testing.T) {
			reg := testregistry.Start(t, testregistry.Options{Token: token, User: "u", Password: "p"})
			d := pushBlob(t, reg, "x/y", []byte("creds"))
			kc := &switchKeychain{}
			kc.cfg.Store(&authn.AuthConfig{Username: "u", Password: "wrong"})
			o := mustOCI(t, reg.Host+"/x/y", OCIOptions{HTTPOptions: fast, PlainHTTP: true, Keychain: kc})
			if _, err := o.Open(context.Background(), d); !errors.Is(err, ErrUnauthorized) {
				t.Fatalf("wrong password: %v", err)
			}
			kc.cfg.Store(&authn.AuthConfig{Username: "u", Password: "p"})
			b, err := o.Open(context.Background(), d)
			if err != nil {
				t.Fatalf("after fixing the credentials: %v", err)
			}
			checkReads(t, b, []byte("creds"))
		})
	}
}
