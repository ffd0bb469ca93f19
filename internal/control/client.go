package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"syscall"
)

// Client calls a daemon's API over its unix socket.
type Client struct {
	socket string
	http   *http.Client
}

// ErrNoDaemon reports that nothing listens on the socket.
var ErrNoDaemon = errors.New("erofsd is not running")

// NewClient returns a client for the daemon listening on socket.
func NewClient(socket string) *Client {
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	}}
	return &Client{socket: socket, http: &http.Client{Transport: tr}}
}

// APIError is an error returned by the daemon.
type APIError struct {
	Status int
	Body   Error
}

func (e *APIError) Error() string { return e.Body.Error }

// Is maps API error codes back to the sentinel errors.
func (e *APIError) Is(target error) bool {
	switch e.Body.Code {
	case "not_found":
		return target == ErrNotFound
	case "exists":
		return target == ErrExists
	case "in_use":
		return target == ErrInUse
	case "bad_request":
		return target == ErrBadRequest
	case "unavailable":
		return target == ErrUnavailable
	}
	return false
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://erofsd"+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("%w (no daemon on %s)", ErrNoDaemon, c.socket)
		}
		if errors.Is(err, fs.ErrPermission) {
			return fmt.Errorf("%s: permission denied (the socket is root's; run as root)", c.socket)
		}
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		e := &APIError{Status: resp.StatusCode}
		if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&e.Body); err != nil {
			e.Body.Error = fmt.Sprintf("HTTP %d", resp.StatusCode)
		}
		return e
	}
	if out == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// Status returns the daemon's status.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	var s Status
	return &s, c.do(ctx, "GET", "/v1/status", nil, &s)
}

// Images lists registered images.
func (c *Client) Images(ctx context.Context) ([]Image, error) {
	var v []Image
	return v, c.do(ctx, "GET", "/v1/images", nil, &v)
}

// Register registers an image.
func (c *Client) Register(ctx context.Context, req RegisterRequest) (*Image, error) {
	var v Image
	return &v, c.do(ctx, "POST", "/v1/images", req, &v)
}

// Unregister removes an image.
func (c *Client) Unregister(ctx context.Context, fsid, domain string) error {
	q := url.Values{}
	if domain != "" {
		q.Set("domain_id", domain)
	}
	return c.do(ctx, "DELETE", "/v1/images/"+url.PathEscape(fsid)+"?"+q.Encode(), nil, nil)
}

// Mount registers (if needed) and mounts an image.
func (c *Client) Mount(ctx context.Context, req MountRequest) (*Mount, error) {
	var v Mount
	return &v, c.do(ctx, "POST", "/v1/mounts", req, &v)
}

// Unmount unmounts a mountpoint made through the daemon.
func (c *Client) Unmount(ctx context.Context, mountpoint string) error {
	return c.do(ctx, "DELETE", "/v1/mounts?"+url.Values{"mountpoint": {mountpoint}}.Encode(), nil, nil)
}
