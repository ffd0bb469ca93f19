package blobstore

import (
	"context"
	"errors"
	"sync/atomic"

	"github.com/erofsd/erofsd/internal/counters"
)

// BackendStats counts what one kind of backend did. Fields are updated
// atomically and may be read at any time. Several stores may share one
// (a daemon opens stores per image but reports totals per kind), which is
// why options take a pointer.
type BackendStats struct {
	// Requests counts requests sent: each attempt at each host for remote
	// stores (auth handshakes not included), each open and read for local
	// ones.
	Requests atomic.Int64
	// Retries counts rounds repeated after a temporary failure.
	Retries atomic.Int64
	// Fallbacks counts requests passed on to the next host because a
	// mirror failed.
	Fallbacks atomic.Int64
	// Operations (Open or ReadAt) that failed, by the class of the error
	// returned to the caller after retries and fallbacks.
	NotFound, Unauthorized, Temporary, Other atomic.Int64
	// Bytes counts blob bytes received (remote: body bytes, including
	// those of attempts that failed later; local: bytes read).
	Bytes atomic.Int64
}

// Stats holds the counters of every backend kind, for a daemon to hand
// to the stores it opens and to its metrics.
type Stats struct {
	Local, HTTP, OCI BackendStats
}

// Kinds names the backend kinds as metrics label them, in Stats order.
var Kinds = []string{"local", "http", "oci"}

// ByKind returns the counters of the kind named as in Kinds, or nil.
func (s *Stats) ByKind(kind string) *BackendStats {
	switch kind {
	case "local":
		return &s.Local
	case "http":
		return &s.HTTP
	case "oci":
		return &s.OCI
	}
	return nil
}

// ErrorClass names the class of err as metrics label it: not_found,
// unauthorized, temporary or other.
func ErrorClass(err error) string {
	switch {
	case errors.Is(err, ErrNotFound):
		return "not_found"
	case errors.Is(err, ErrUnauthorized):
		return "unauthorized"
	case errors.Is(err, ErrTemporary):
		return "temporary"
	}
	return "other"
}

// countError counts a failed operation by class. Cancellation by the
// caller is not the backend's failure and is not counted.
func (s *BackendStats) countError(err error) {
	if err == nil || errors.Is(err, context.Canceled) {
		return
	}
	switch ErrorClass(err) {
	case "not_found":
		s.NotFound.Add(1)
	case "unauthorized":
		s.Unauthorized.Add(1)
	case "temporary":
		s.Temporary.Add(1)
	default:
		s.Other.Add(1)
	}
}

// Counter families of the blob stores, by backend kind.
var (
	RequestsDesc = &counters.Desc{Name: "backend_requests_total", Labels: []string{"backend"},
		Help: "Requests sent to blob stores (each attempt at each host; local stores: opens and reads), by backend kind."}
	RetriesDesc = &counters.Desc{Name: "backend_retries_total", Labels: []string{"backend"},
		Help: "Blob store request rounds repeated after a temporary failure (5xx, reset, short read, timeout), by backend kind."}
	FallbacksDesc = &counters.Desc{Name: "backend_fallbacks_total", Labels: []string{"backend"},
		Help: "Blob store requests passed on to the next host because a registry mirror failed, by backend kind."}
	ErrorsDesc = &counters.Desc{Name: "backend_errors_total", Labels: []string{"backend", "class"},
		Help: "Blob store operations that failed after retries and fallbacks, by backend kind and error class."}
	BytesDesc = &counters.Desc{Name: "backend_received_bytes_total", Labels: []string{"backend"},
		Help: "Blob bytes received from blob stores, including attempts that failed later, by backend kind."}
)

// Describe names the blob stores' families.
func (s *Stats) Describe(describe func(*counters.Desc)) {
	for _, d := range []*counters.Desc{RequestsDesc, RetriesDesc, FallbacksDesc, ErrorsDesc, BytesDesc} {
		describe(d)
	}
}

// Counters reports every kind's counters.
func (s *Stats) Counters(emit func(counters.Value)) {
	e := counters.Emitter(emit)
	for _, kind := range Kinds {
		st := s.ByKind(kind)
		e.Add(RequestsDesc, st.Requests.Load(), kind)
		e.Add(RetriesDesc, st.Retries.Load(), kind)
		e.Add(FallbacksDesc, st.Fallbacks.Load(), kind)
		e.Add(ErrorsDesc, st.NotFound.Load(), kind, "not_found")
		e.Add(ErrorsDesc, st.Unauthorized.Load(), kind, "unauthorized")
		e.Add(ErrorsDesc, st.Temporary.Load(), kind, "temporary")
		e.Add(ErrorsDesc, st.Other.Load(), kind, "other")
		e.Add(BytesDesc, st.Bytes.Load(), kind)
	}
}
