package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/portcullis/portcullis/internal/replicate"
)

// replicateCmd: registry replicate status|run RULE [--url URL]
// [--username USER --password-file FILE] [--json]. It asks a serving
// registry's API (GET /api/v1/replication, POST .../<rule>/run); with auth
// on, the user needs the catalog scope.
func replicateCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "status" && args[0] != "run") {
		return usageError{"replicate: expected \"status\" or \"run RULE\""}
	}
	verb := args[0]
	fs := flag.NewFlagSet("replicate "+verb, flag.ContinueOnError)
	fs.SetOutput(stderr)
	base := fs.String("url", "http://127.0.0.1:5000", "the registry's base URL")
	user := fs.String("username", "", "a user or robot with the catalog scope, when auth is on")
	passFile := fs.String("password-file", "", "file holding the password")
	asJSON := fs.Bool("json", false, "print the status as JSON")
	rest := args[1:]
	var rule string
	if verb == "run" {
		if len(rest) == 0 || strings.HasPrefix(rest[0], "-") {
			return usageError{"replicate run: expected a rule name"}
		}
		rule, rest = rest[0], rest[1:]
	}
	if err := fs.Parse(rest); err != nil {
		return usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("replicate %s: unexpected argument %q", verb, fs.Arg(0))}
	}
	c := &apiClient{base: strings.TrimRight(*base, "/"), user: *user, http: &http.Client{Timeout: time.Minute}}
	if *passFile != "" {
		b, err := os.ReadFile(*passFile)
		if err != nil {
			return fmt.Errorf("password file: %w", err)
		}
		c.pass = strings.TrimSpace(string(b))
	}
	if verb == "run" {
		if _, err := c.do(ctx, http.MethodPost, "/api/v1/replication/"+url.PathEscape(rule)+"/run"); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "replication rule %s: run started\n", rule)
		return nil
	}
	body, err := c.do(ctx, http.MethodGet, "/api/v1/replication")
	if err != nil {
		return err
	}
	if *asJSON {
		_, err := stdout.Write(body)
		return err
	}
	var st struct {
		Rules []replicate.RuleStatus `json:"rules"`
	}
	if err := json.Unmarshal(body, &st); err != nil {
		return fmt.Errorf("decode status: %w", err)
	}
	printReplication(stdout, st.Rules)
	return nil
}

func printReplication(w io.Writer, rules []replicate.RuleStatus) {
	if len(rules) == 0 {
		fmt.Fprintln(w, "no replication rules")
	}
	for _, r := range rules {
		avail := "available"
		if !r.RemoteAvailable {
			avail = "unavailable"
		}
		fmt.Fprintf(w, "%s: %s %s (%s, remote %s)  pending %d", r.Name, r.Mode, r.Remote, r.Trigger, avail, r.Pending)
		if r.Pending > 0 {
			fmt.Fprintf(w, ", oldest %s", time.Duration(r.OldestPendingSeconds*float64(time.Second)).Round(time.Second))
		}
		if r.LastSuccess != nil {
			fmt.Fprintf(w, ", last success %s", r.LastSuccess.Format(time.RFC3339))
		}
		fmt.Fprintln(w)
		if r.LastRun != nil {
			fmt.Fprintf(w, "  last run %s: checked %d, copied %d, deleted %d, failed %d %s\n", r.LastRun.Started.Format(time.RFC3339),
				r.LastRun.Checked, r.LastRun.Copied, r.LastRun.Deleted, r.LastRun.Failed, r.LastRun.Error)
		}
		for _, f := range r.Failures {
			kind := "retrying"
			if f.Permanent {
				kind = "refused"
			}
			ref := f.Repository
			if f.Tag != "" {
				ref += ":" + f.Tag
			}
			about := fmt.Sprintf("%d attempts since %s", f.Attempts, f.Since.Format(time.RFC3339))
			if f.Digest != "" {
				about = string(f.Digest) + ", " + about
			}
			fmt.Fprintf(w, "  %s %s (%s): %s\n", kind, ref, about, f.Error)
		}
	}
}

// apiClient calls a registry's /api/v1/, with a token from its token
// service when it asks for one.
type apiClient struct {
	base, user, pass string
	http             *http.Client
}

var challengeParam = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`(realm|service)="([^"]*)"`) })

func (c *apiClient) do(ctx context.Context, method, path string) ([]byte, error) {
	resp, err := c.send(ctx, method, path, "")
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == http.StatusUnauthorized && c.user != "" {
		ch := resp.Header.Get("WWW-Authenticate")
		resp.Body.Close()
		token, err := c.token(ctx, ch)
		if err != nil {
			return nil, err
		}
		if resp, err = c.send(ctx, method, path, "Bearer "+token); err != nil {
			return nil, err
		}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(body)))
	}
	return body, nil
}

func (c *apiClient) send(ctx context.Context, method, path, authorization string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, nil)
	if err != nil {
		return nil, err
	}
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	return resp, nil
}

// token gets a catalog token from the realm a Bearer challenge names.
func (c *apiClient) token(ctx context.Context, challenge string) (string, error) {
	params := map[string]string{}
	for _, m := range challengeParam().FindAllStringSubmatch(challenge, -1) {
		params[m[1]] = m[2]
	}
	if params["realm"] == "" {
		return "", errors.New("the registry asked for credentials without naming its token service")
	}
	q := url.Values{"scope": {"registry:catalog:*"}}
	if s := params["service"]; s != "" {
		q.Set("service", s)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, params["realm"]+"?"+q.Encode(), nil)
	if err != nil {
		return "", err
	}
	req.SetBasicAuth(c.user, c.pass)
	resp, err := c.http.Do(req)
	if err != nil {
		return "", fmt.Errorf("token: %w", err)
	}
	defer resp.Body.Close()
	var v struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&v) != nil {
		return "", fmt.Errorf("token: %s", resp.Status)
	}
	if v.Token == "" {
		v.Token = v.AccessToken
	}
	return v.Token, nil
}
