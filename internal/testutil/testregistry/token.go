package testregistry

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"time"
)

// tokenServer is the registry's token service (distribution "token"
// auth): it checks basic credentials and answers with a JWT signed with
// ES256 whose x5c header carries a self-signed certificate, the one the
// registry trusts as its rootcertbundle. Anonymous requests get a token
// without access, as Docker Hub gives for private repositories.
type tokenServer struct {
	user, pass      string
	service, issuer string
	key             *ecdsa.PrivateKey
	cert            []byte // DER
	srv             *httptest.Server
	realm           string
	issued          atomic.Int64
	refused         atomic.Int64
}

func newTokenServer(user, pass, bundlePath string) (*tokenServer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "erofsd test token issuer"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(bundlePath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		return nil, err
	}
	s := &tokenServer{user: user, pass: pass, service: "erofsd-test-registry", issuer: "erofsd-test-issuer", key: key, cert: der}
	s.srv = httptest.NewServer(s) // 127.0.0.1
	// The realm is named by "localhost": go-containerregistry refuses
	// realms at loopback IP literals other than the registry's own
	// address (an SSRF guard), but not host names.
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(s.srv.URL, "http://"))
	s.realm = "http://localhost:" + port + "/token"
	return s, nil
}

func (s *tokenServer) close() { s.srv.Close() }

type access struct {
	Type    string   `json:"type"`
	Name    string   `json:"name"`
	Actions []string `json:"actions"`
}

func (s *tokenServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	user, pass, hasAuth := r.BasicAuth()
	if hasAuth && (user != s.user || pass != s.pass) {
		s.refused.Add(1)
		w.Header().Set("WWW-Authenticate", `Basic realm="erofsd-test-token"`)
		http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}`, http.StatusUnauthorized)
		return
	}
	if r.URL.Query().Get("service") != s.service {
		http.Error(w, "unknown service", http.StatusBadRequest)
		return
	}
	var grants []access
	if hasAuth {
		for _, scope := range r.URL.Query()["scope"] {
			// repository:NAME:ACTIONS; NAME may hold no colons here.
			parts := strings.Split(scope, ":")
			if len(parts) != 3 || parts[0] != "repository" {
				continue
			}
			grants = append(grants, access{Type: parts[0], Name: parts[1], Actions: strings.Split(parts[2], ",")})
		}
	}
	tok, err := s.sign(user, grants)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	s.issued.Add(1)
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{
		"token": tok, "access_token": tok, "expires_in": 300, "issued_at": time.Now().UTC().Format(time.RFC3339),
	})
}

func (s *tokenServer) sign(subject string, grants []access) (string, error) {
	enc := base64.RawURLEncoding
	header, _ := json.Marshal(map[string]any{
		"typ": "JWT", "alg": "ES256", "x5c": []string{base64.StdEncoding.EncodeToString(s.cert)},
	})
	now := time.Now()
	var jti [8]byte
	rand.Read(jti[:])
	claims, _ := json.Marshal(map[string]any{
		"iss": s.issuer, "sub": subject, "aud": s.service,
		"exp": now.Add(5 * time.Minute).Unix(), "nbf": now.Add(-time.Minute).Unix(), "iat": now.Unix(),
		"jti": fmt.Sprintf("%x", jti), "access": grants,
	})
	signed := enc.EncodeToString(header) + "." + enc.EncodeToString(claims)
	sum := sha256.Sum256([]byte(signed))
	r, sv, err := ecdsa.Sign(rand.Reader, s.key, sum[:])
	if err != nil {
		return "", err
	}
	// JWS ES256: r and s as two 32-byte big-endian integers.
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	sv.FillBytes(sig[32:])
	return signed + "." + enc.EncodeToString(sig), nil
}

func (s *tokenServer) config(bundlePath string) string {
	return fmt.Sprintf("auth:\n  token:\n    realm: %s\n    service: %s\n    issuer: %s\n    rootcertbundle: %s\n",
		s.realm, s.service, s.issuer, bundlePath)
}

// token asks the token server for a token with scope, as a client would.
func (s *tokenServer) token(scope string) (string, error) {
	req, err := http.NewRequest(http.MethodGet, s.srv.URL+"/token?service="+s.service+"&scope="+scope, nil)
	if err != nil {
		return "", err
	}
	req.SetBasicAuth(s.user, s.pass)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var out struct {
		Token string `json:"token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || out.Token == "" {
		return "", fmt.Errorf("token: HTTP %d: %v", resp.StatusCode, err)
	}
	return out.Token, nil
}
