package criproxy

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	rt "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func authOf(t *testing.T, kc authn.Keychain, res authn.Resource) authn.AuthConfig {
	t.Helper()
	a, err := kc.Resolve(res)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := a.Authorization()
	if err != nil {
		t.Fatal(err)
	}
	return *cfg
}

func TestCredentials(t *testing.T) {
	c := NewCredentials()
	changes := 0
	c.OnChange = func() { changes++ }
	c.Record("registry.test/team/app:v1", &rt.AuthConfig{Username: "u", Password: "p"})
	c.Record("nginx", &rt.AuthConfig{IdentityToken: "tok"}) // kubelet's short Docker Hub names
	if err := c.Record("registry.test/team/app@sha256:"+strings.Repeat("0", 64), &rt.AuthConfig{Username: "u", Password: "p"}); err != nil {
		t.Fatal(err)
	}
	if changes != 2 {
		t.Errorf("%d changes, want 2 (the same credentials again are none)", changes)
	}
	for _, tc := range []struct {
		res  string
		repo bool
		want authn.AuthConfig
	}{
		{"registry.test/team/app", true, authn.AuthConfig{Username: "u", Password: "p"}},
		{"index.docker.io/library/nginx", true, authn.AuthConfig{IdentityToken: "tok"}},
		{"registry.test/team/other", true, authn.AuthConfig{}}, // another repository: not these
		{"registry.test", false, authn.AuthConfig{}},           // a registry as a whole: not a repository's
	} {
		var res authn.Resource
		var err error
		if tc.repo {
			res, err = name.NewRepository(tc.res)
		} else {
			res, err = name.NewRegistry(tc.res)
		}
		if err != nil {
			t.Fatal(err)
		}
		if got := authOf(t, c, res); got != tc.want {
			t.Errorf("%s: %+v, want %+v", tc.res, got, tc.want)
		}
	}
	// The blob store asks per host: For answers for its repository's.
	reg, _ := name.NewRegistry("registry.test")
	mirror, _ := name.NewRegistry("mirror.test")
	if got := authOf(t, c.For("registry.test/team/app"), reg); got.Username != "u" {
		t.Errorf("For: %+v", got)
	}
	if got := authOf(t, c.For("registry.test/team/app"), mirror); got != (authn.AuthConfig{}) {
		t.Errorf("For gave a mirror the upstream's credentials: %+v", got)
	}
	// A pull without credentials forgets them.
	c.Record("registry.test/team/app:v2", nil)
	if _, ok := c.Lookup("registry.test/team/app"); ok || changes != 3 {
		t.Errorf("after a pull without credentials: still known (%d changes)", changes)
	}
	// Saved and loaded by a restarted daemon.
	data, err := c.Save()
	if err != nil {
		t.Fatal(err)
	}
	d := NewCredentials()
	if err := d.Load(data); err != nil {
		t.Fatal(err)
	}
	if a, ok := d.Lookup("docker.io/library/nginx"); !ok || a.IdentityToken != "tok" {
		t.Errorf("loaded: %+v %v", a, ok)
	}
	if err := d.Load([]byte(`[{"repository":"UPPER/../x"}]`)); err == nil {
		t.Error("loaded a bad repository name")
	}
}

func TestCredentialsBounded(t *testing.T) {
	c := NewCredentials()
	for i := range MaxRepositories + 10 {
		c.Record(fmt.Sprintf("registry.test/r%d:v1", i), &rt.AuthConfig{Username: "u"})
	}
	if _, ok := c.Lookup("registry.test/r0"); ok {
		t.Error("the oldest repository is still remembered")
	}
	if _, ok := c.Lookup(fmt.Sprintf("registry.test/r%d", MaxRepositories+9)); !ok {
		t.Error("the newest repository is forgotten")
	}
	if len(c.byRepo) != MaxRepositories || len(c.order) != MaxRepositories {
		t.Errorf("%d repositories, %d in order", len(c.byRepo), len(c.order))
	}
}

// upstream is a recording CRI image service.
type upstream struct {
	rt.UnimplementedImageServiceServer
	mu    sync.Mutex
	pulls []*rt.PullImageRequest
}

func (u *upstream) PullImage(ctx context.Context, req *rt.PullImageRequest) (*rt.PullImageResponse, error) {
	u.mu.Lock()
	u.pulls = append(u.pulls, req)
	u.mu.Unlock()
	return &rt.PullImageResponse{ImageRef: "sha256:abc"}, nil
}

func (u *upstream) ListImages(ctx context.Context, req *rt.ListImagesRequest) (*rt.ListImagesResponse, error) {
	return &rt.ListImagesResponse{Images: []*rt.Image{{Id: "sha256:abc"}}}, nil
}

func serve(t *testing.T, register func(*grpc.Server)) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "s.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	register(srv)
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	return sock
}

func dial(t *testing.T, sock string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func TestProxyRecordsAndForwards(t *testing.T) {
	up := &upstream{}
	upSock := serve(t, func(s *grpc.Server) { rt.RegisterImageServiceServer(s, up) })
	creds := NewCredentials()
	proxySock := serve(t, New(dial(t, upSock), creds).Register)
	client := rt.NewImageServiceClient(dial(t, proxySock))
	ctx := context.Background()

	auth := &rt.AuthConfig{Username: "u", Password: "p", ServerAddress: "registry.test"}
	resp, err := client.PullImage(ctx, &rt.PullImageRequest{Image: &rt.ImageSpec{Image: "registry.test/app:v1"}, Auth: auth})
	if err != nil || resp.ImageRef != "sha256:abc" {
		t.Fatalf("PullImage: %v, %v", resp, err)
	}
	if len(up.pulls) != 1 || up.pulls[0].Auth.GetPassword() != "p" {
		t.Errorf("containerd got %v", up.pulls)
	}
	if a, ok := creds.Lookup("registry.test/app"); !ok || a.Password != "p" {
		t.Errorf("recorded %+v, %v", a, ok)
	}
	list, err := client.ListImages(ctx, &rt.ListImagesRequest{})
	if err != nil || len(list.Images) != 1 {
		t.Errorf("ListImages: %v, %v", list, err)
	}
	// What containerd does not serve stays unimplemented, not hidden.
	if _, err := client.ImageFsInfo(ctx, &rt.ImageFsInfoRequest{}); err == nil {
		t.Error("ImageFsInfo answered without containerd")
	}
}
