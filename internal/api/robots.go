package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	dauth "github.com/distribution/distribution/v3/registry/auth"

	"github.com/portcullis/portcullis/auth/audit"
	"github.com/portcullis/portcullis/auth/token"
	"github.com/portcullis/portcullis/internal/server"
)

// robotsPath lists and creates robot accounts; robotsPath/<name> revokes one.
const robotsPath = Prefix + "robots"

// adminAccess is the scope of the management API.
var adminAccess = dauth.Access{Resource: dauth.Resource{Type: "registry", Name: "admin"}, Action: "*"}

// Bounds of a robot creation: its body, and the description it stores.
const (
	maxRobotBody        = 64 << 10
	maxRobotDescription = 1024
)

// Robots manages robot accounts: the store `registry robot` uses.
type Robots interface {
	Create(ctx context.Context, spec token.RobotSpec) (token.Robot, string, error)
	List(ctx context.Context) ([]token.Robot, error)
	Revoke(ctx context.Context, name string) error
}

// robotView is a robot as the API shows it: never its secret's hash.
type robotView struct {
	Name        string             `json:"name"`
	Login       string             `json:"login"`
	Description string             `json:"description,omitempty"`
	Access      []token.RobotGrant `json:"access"`
	CreatedAt   time.Time          `json:"createdAt"`
	CreatedBy   string             `json:"createdBy,omitempty"`
	ExpiresAt   time.Time          `json:"expiresAt,omitzero"`
}

func viewRobot(r token.Robot) robotView {
	return robotView{Name: r.Name, Login: "robot+" + r.Name, Description: r.Description, Access: r.Access,
		CreatedAt: r.CreatedAt, CreatedBy: r.CreatedBy, ExpiresAt: r.ExpiresAt}
}

// robotRequest is the body of POST /api/v1/robots.
type robotRequest struct {
	Name        string             `json:"name"`
	Description string             `json:"description"`
	Access      []token.RobotGrant `json:"access"`
	// Expires is the lifetime, e.g. "720h"; empty: no expiry (or the
	// configured maximum).
	Expires string `json:"expires"`
}

// serveRobots answers GET /api/v1/robots ({"robots": [...]}), POST
// /api/v1/robots (201 with the robot and its secret, shown this once) and
// DELETE /api/v1/robots/<name>, to callers granted registry:admin:*. Each
// creation and revocation is audited, never with the secret.
func (h *Handler) serveRobots(w http.ResponseWriter, r *http.Request) {
	caller, ok := h.adminScope(w, r, "robot accounts")
	if !ok {
		return
	}
	if h.robots == nil {
		h.writeError(w, r, Status(http.StatusNotFound, "UNSUPPORTED", "robot accounts are not enabled (auth.enabled and auth.robots.enabled)"))
		return
	}
	name, named := strings.CutPrefix(r.URL.Path, robotsPath+"/")
	switch {
	case r.URL.Path == robotsPath && r.Method == http.MethodGet:
		list, err := h.robots.List(r.Context())
		if err != nil {
			h.writeError(w, r, Internal("could not list the robot accounts", err))
			return
		}
		out := make([]robotView, 0, len(list))
		for _, rb := range list {
			out = append(out, viewRobot(rb))
		}
		writeJSON(w, http.StatusOK, map[string]any{"robots": out})
	case r.URL.Path == robotsPath && r.Method == http.MethodPost:
		h.createRobot(w, r, caller)
	case named && name != "" && !strings.Contains(name, "/") && r.Method == http.MethodDelete:
		err := h.robots.Revoke(r.Context(), name)
		h.auditRobot(r, caller, "revoke", name, err)
		switch {
		case errors.Is(err, token.ErrRobotNotFound):
			h.writeError(w, r, Status(http.StatusNotFound, "NAME_UNKNOWN", "no robot "+quoteShort(name)))
		case err != nil:
			h.writeError(w, r, Internal("could not revoke the robot", err))
		default:
			writeJSON(w, http.StatusOK, map[string]any{"revoked": "robot+" + name})
		}
	default:
		h.writeError(w, r, Status(http.StatusNotFound, "UNSUPPORTED", "no such API endpoint: "+r.Method+" "+quoteShort(r.URL.Path)))
	}
}

func (h *Handler) createRobot(w http.ResponseWriter, r *http.Request, caller string) {
	var req robotRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxRobotBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		h.writeError(w, r, Status(http.StatusBadRequest, "INVALID_REQUEST", "the body must be one JSON object {name, description, access: [{repositories, actions}], expires} of at most 64 KiB: "+oneLine(err.Error())))
		return
	}
	if len(req.Description) > maxRobotDescription {
		h.writeError(w, r, Status(http.StatusBadRequest, "INVALID_REQUEST", fmt.Sprintf("description is longer than %d bytes", maxRobotDescription)))
		return
	}
	var lifetime time.Duration
	if req.Expires != "" {
		d, err := time.ParseDuration(req.Expires)
		if err != nil || d <= 0 {
			h.writeError(w, r, Status(http.StatusBadRequest, "INVALID_REQUEST", "expires must be a positive duration like 720h"))
			return
		}
		lifetime = d
	}
	createdBy := "api"
	if caller != "" {
		createdBy = "api:" + caller
	}
	rb, secret, err := h.robots.Create(r.Context(), token.RobotSpec{Name: req.Name, Description: req.Description,
		Access: req.Access, Lifetime: lifetime, CreatedBy: createdBy})
	h.auditRobot(r, caller, "create", req.Name, err)
	switch {
	case errors.Is(err, token.ErrRobotExists):
		h.writeError(w, r, Status(http.StatusConflict, "DENIED", "robot "+quoteShort(req.Name)+" already exists; revoke it first"))
		return
	case errors.Is(err, token.ErrInvalidRobot):
		h.writeError(w, r, Status(http.StatusBadRequest, "INVALID_REQUEST", oneLine(err.Error())))
		return
	case err != nil:
		h.writeError(w, r, Internal("could not store the robot", err))
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusCreated, map[string]any{"robot": viewRobot(rb), "login": "robot+" + rb.Name, "secret": secret})
}

// auditRobot records a robot's creation or revocation by caller.
func (h *Handler) auditRobot(r *http.Request, caller, action, name string, err error) {
	res, reason := audit.ResultSuccess, "over the management API"
	if err != nil {
		res, reason = audit.ResultFailure, oneLine(err.Error())
	}
	h.audit.Record(r.Context(), audit.Event{Kind: audit.KindRobot, Subject: subjectOf(caller), Addr: token.RemoteHost(r),
		Action: action, Repository: "robot+" + name, Result: res, Reason: reason, RequestID: server.RequestID(r.Context())})
}

// subjectOf is the audit subject of a token's login.
func subjectOf(login string) string {
	switch {
	case login == "":
		return "anonymous"
	case strings.HasPrefix(login, "robot+"):
		return "robot:" + strings.TrimPrefix(login, "robot+")
	}
	return "user:" + login
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func oneLine(s string) string {
	s = strings.ReplaceAll(strings.ReplaceAll(s, "\r", " "), "\n", " ")
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return s
}

// adminScope answers the request with an error and returns false when
// auth is on and the caller lacks the admin scope (registry:admin:*): the
// challenge (401) without a valid token, 403 DENIED with a token that does
// not grant the scope (the token service granted what the caller may, and
// another token would not grant more). Otherwise it returns the caller's
// login ("" with auth off).
func (h *Handler) adminScope(w http.ResponseWriter, r *http.Request, what string) (string, bool) {
	if h.auth == nil {
		return "", true
	}
	grant, err := h.auth.Authorize(r, adminAccess)
	var ch dauth.Challenge
	switch {
	case errors.As(err, &ch) && !errors.Is(err, token.ErrInsufficientScope):
		h.writeError(w, r, err)
		return "", false
	case err != nil:
		h.writeError(w, r, Status(http.StatusForbidden, "DENIED", fmt.Sprintf("%s need the admin scope (registry:admin:*): list the caller under auth.admins", what)))
		return "", false
	}
	h.audit.Record(r.Context(), audit.Event{Kind: audit.KindAdmin, Subject: subjectOf(grant.Login), Addr: token.RemoteHost(r),
		Action: r.Method, Repository: r.URL.Path, Result: audit.ResultAllowed, RequestID: server.RequestID(r.Context())})
	return grant.Login, true
}
