package main

import (
	"fmt"
	"net/http"
	"time"
)

// healthcheckTimeout bounds one check; the image's HEALTHCHECK runs it often.
const healthcheckTimeout = 2 * time.Second

// healthcheck is the image's HEALTHCHECK: a scratch image has no curl, so the
// binary checks itself. It exits 0 when URL answers 2xx.
func (c *cli) healthcheck(args []string) int {
	fs := c.newFlagSet("healthcheck", "[URL]", "GET URL (default http://127.0.0.1:$PORT/healthz) and exit 0 if it answers 2xx, else 1.\nThe warmpool image's HEALTHCHECK runs it.")
	pos, code, ok := c.parse(fs, args, 0, 1)
	if !ok {
		return code
	}
	url := ""
	if len(pos) == 1 {
		url = pos[0]
	} else {
		port := c.env("PORT")
		if port == "" {
			return c.usageError(fs, "no URL and no $PORT")
		}
		url = "http://127.0.0.1:" + port + "/healthz"
	}
	hc := &http.Client{Timeout: healthcheckTimeout}
	resp, err := hc.Get(url)
	if err != nil {
		return c.fail(fmt.Errorf("healthcheck: %w", err))
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return c.fail(fmt.Errorf("healthcheck: %s answered %s", url, resp.Status))
	}
	return exitOK
}
