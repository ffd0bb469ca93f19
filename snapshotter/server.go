package snapshotter

import (
	"context"
	"net"
	"path"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/v2/contrib/snapshotservice"
	"github.com/erofsd/erofsd/internal/counters"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Server serves a Snapshotter on containerd's snapshots gRPC API and
// counts its operations.
type Server struct {
	grpc *grpc.Server
	ops  sync.Map // op name -> *opCounters
}

type opCounters struct{ ok, failed atomic.Int64 }

// NewServer returns a gRPC server of s. A panic in an operation becomes
// an error of that call.
func NewServer(s *Snapshotter) *Server {
	srv := &Server{}
	srv.grpc = grpc.NewServer(grpc.UnaryInterceptor(srv.intercept), grpc.WaitForHandlers(true))
	snapshotsapi.RegisterSnapshotsServer(srv.grpc, snapshotservice.FromSnapshotter(s))
	return srv
}

// Serve answers containerd on l until Stop.
func (srv *Server) Serve(l net.Listener) error { return srv.grpc.Serve(l) }

// Stop ends Serve, cancelling the calls in progress, and returns when
// their handlers have.
func (srv *Server) Stop() { srv.grpc.Stop() }

func (srv *Server) intercept(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = status.Errorf(codes.Internal, "panic in %s: %v\n%s", info.FullMethod, p, debug.Stack())
		}
		op := strings.ToLower(path.Base(info.FullMethod))
		c, _ := srv.ops.LoadOrStore(op, &opCounters{})
		// A Prepare answered "exists" is a remote snapshot, not a failure.
		if err == nil || status.Code(err) == codes.AlreadyExists {
			c.(*opCounters).ok.Add(1)
		} else {
			c.(*opCounters).failed.Add(1)
		}
	}()
	return handler(ctx, req)
}

// Operations counts the snapshotter's operations by name and result.
var Operations = &counters.Desc{Name: "snapshotter_operations_total", Labels: []string{"op", "result"},
	Help: "containerd snapshotter operations (prepare, view, mounts, commit, remove, ...), by result; a prepare answered 'exists' (a layer of an erofsd image, not downloaded) counts as ok."}

// Describe names the server's counter family.
func (srv *Server) Describe(describe func(*counters.Desc)) { describe(Operations) }

// Counters reports the operations so far.
func (srv *Server) Counters(emit func(counters.Value)) {
	e := counters.Emitter(emit)
	srv.ops.Range(func(k, v any) bool {
		c := v.(*opCounters)
		e.Add(Operations, c.ok.Load(), k.(string), "ok")
		e.Add(Operations, c.failed.Load(), k.(string), "error")
		return true
	})
}
