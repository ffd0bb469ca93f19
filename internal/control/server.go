package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// Backend is what the daemon exposes through the API.
type Backend interface {
	Register(ctx context.Context, req RegisterRequest) (*Image, error)
	Unregister(ctx context.Context, fsid, domain string) error
	Images(ctx context.Context) ([]Image, error)
	Mount(ctx context.Context, req MountRequest) (*Mount, error)
	Unmount(ctx context.Context, mountpoint string) error
	Mounts(ctx context.Context) ([]Mount, error)
	Status(ctx context.Context) (*Status, error)
}

// Errors a Backend wraps to choose the HTTP status.
var (
	ErrNotFound    = errors.New("not found")
	ErrExists      = errors.New("already exists")
	ErrInUse       = errors.New("in use")
	ErrBadRequest  = errors.New("bad request")
	ErrUnavailable = errors.New("unavailable")
)

// Handler returns the API's http.Handler.
func Handler(b Backend) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		v, err := b.Status(r.Context())
		reply(w, v, err)
	})
	mux.HandleFunc("GET /v1/images", func(w http.ResponseWriter, r *http.Request) {
		v, err := b.Images(r.Context())
		reply(w, v, err)
	})
	mux.HandleFunc("POST /v1/images", func(w http.ResponseWriter, r *http.Request) {
		var req RegisterRequest
		if !decode(w, r, &req) {
			return
		}
		v, err := b.Register(r.Context(), req)
		reply(w, v, err)
	})
	mux.HandleFunc("DELETE /v1/images/{fsid}", func(w http.ResponseWriter, r *http.Request) {
		replyEmpty(w, b.Unregister(r.Context(), r.PathValue("fsid"), r.URL.Query().Get("domain_id")))
	})
	mux.HandleFunc("GET /v1/mounts", func(w http.ResponseWriter, r *http.Request) {
		v, err := b.Mounts(r.Context())
		reply(w, v, err)
	})
	mux.HandleFunc("POST /v1/mounts", func(w http.ResponseWriter, r *http.Request) {
		var req MountRequest
		if !decode(w, r, &req) {
			return
		}
		v, err := b.Mount(r.Context(), req)
		reply(w, v, err)
	})
	mux.HandleFunc("DELETE /v1/mounts", func(w http.ResponseWriter, r *http.Request) {
		replyEmpty(w, b.Unmount(r.Context(), r.URL.Query().Get("mountpoint")))
	})
	return mux
}

func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, fmt.Errorf("%w: %v", ErrBadRequest, err))
		return false
	}
	return true
}

func reply[T any](w http.ResponseWriter, v T, err error) {
	if err != nil {
		writeError(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

func replyEmpty(w http.ResponseWriter, err error) {
	if err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func writeError(w http.ResponseWriter, err error) {
	status, code := http.StatusInternalServerError, "internal"
	switch {
	case errors.Is(err, ErrNotFound):
		status, code = http.StatusNotFound, "not_found"
	case errors.Is(err, ErrExists):
		status, code = http.StatusConflict, "exists"
	case errors.Is(err, ErrInUse):
		status, code = http.StatusConflict, "in_use"
	case errors.Is(err, ErrBadRequest):
		status, code = http.StatusBadRequest, "bad_request"
	case errors.Is(err, ErrUnavailable):
		status, code = http.StatusServiceUnavailable, "unavailable"
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(Error{Error: err.Error(), Code: code})
}

// Listen creates the unix socket at path with mode 0600 (its directory
// 0700 if it has to be made). A stale socket left by a dead daemon is
// replaced; a live one is an error.
func Listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("%s: another daemon is listening", path)
	}
	os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}
