package main

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
)

func TestHealthcheck(t *testing.T) {
	status := http.StatusOK
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(status)
	}))
	defer srv.Close()
	u, _ := url.Parse(srv.URL)

	if code, _, stderr := runCLI(nil, "healthcheck", srv.URL+"/healthz"); code != exitOK {
		t.Fatalf("healthy: exit %d: %s", code, stderr)
	}
	if code, _, stderr := runCLI(map[string]string{"PORT": u.Port()}, "healthcheck"); code != exitOK {
		t.Fatalf("healthy via $PORT: exit %d: %s", code, stderr)
	}
	status = http.StatusServiceUnavailable
	if code, _, _ := runCLI(nil, "healthcheck", srv.URL+"/healthz"); code != exitFail {
		t.Fatalf("unhealthy: exit %d; want %d", code, exitFail)
	}
	if code, _, _ := runCLI(nil, "healthcheck", "http://127.0.0.1:1/healthz"); code != exitFail {
		t.Fatalf("nothing listening: exit %d; want %d", code, exitFail)
	}
	if code, _, _ := runCLI(nil, "healthcheck"); code != exitUsage {
		t.Fatalf("no URL, no $PORT: exit %d; want %d", code, exitUsage)
	}
}
