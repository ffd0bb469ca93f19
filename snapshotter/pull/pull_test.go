package pull

import (
	"errors"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
)

// keychain answers for one registry key.
type keychain struct {
	key  string
	auth authn.AuthConfig
	err  error
}

func (k keychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	if k.err != nil {
		return nil, k.err
	}
	if r.RegistryStr() != k.key {
		return authn.Anonymous, nil
	}
	return authn.FromConfig(k.auth), nil
}

func TestCredentials(t *testing.T) {
	for _, tc := range []struct {
		name, host     string
		kc             keychain
		user, password string
	}{
		{"docker hub by its docker config key", "registry-1.docker.io", keychain{key: "index.docker.io", auth: authn.AuthConfig{Username: "u", Password: "p"}}, "u", "p"},
		{"a registry with a port", "127.0.0.1:5000", keychain{key: "127.0.0.1:5000", auth: authn.AuthConfig{Username: "a", Password: "b"}}, "a", "b"},
		{"identity token", "registry.test", keychain{key: "registry.test", auth: authn.AuthConfig{IdentityToken: "tok"}}, "", "tok"},
		{"another registry's", "registry.test", keychain{key: "other.test", auth: authn.AuthConfig{Username: "u", Password: "p"}}, "", ""},
		{"a failing helper: anonymous", "registry.test", keychain{err: errors.New("helper crashed")}, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, p, err := credentials(tc.kc)(tc.host)
			if err != nil || u != tc.user || p != tc.password {
				t.Errorf("got %q %q %v, want %q %q", u, p, err, tc.user, tc.password)
			}
		})
	}
}
