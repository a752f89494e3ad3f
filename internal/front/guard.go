package front

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/distribution/distribution/v3"
	"github.com/distribution/distribution/v3/registry/api/errcode"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	pauth "github.com/portcullis/portcullis/auth"
	"github.com/portcullis/portcullis/auth/audit"
	"github.com/portcullis/portcullis/auth/token"
	"github.com/portcullis/portcullis/internal/api"
	"github.com/portcullis/portcullis/internal/server"
)

// Authorizer checks a request's bearer token for the given accesses.
type Authorizer = api.Authorizer

// TagPolicy rules on tag operations and says who may push.
type TagPolicy interface {
	SubjectForLogin(login string) pauth.Subject
	TagDecision(s pauth.Subject, repository, tag string, op pauth.TagOp) pauth.Ruling
	Grant(s pauth.Subject, repository string, requested pauth.Actions) (pauth.Actions, pauth.Decision)
}

// repositories opens repositories by name, to look tags up.
type repositories interface {
	Repository(ctx context.Context, name reference.Named) (distribution.Repository, error)
}

// Guard is the access layer of the front handler, used when auth is on:
// it authorizes the routes distribution does not serve, enforces tag rules
// before anything is stored, and audits writes.
type Guard struct {
	Auth  Authorizer
	Tags  TagPolicy
	Repos repositories
	Audit *audit.Log // nil: no audit
}

// tagOps returns the tag operations a manifest request performs: a PUT by
// tag creates or moves that tag, a DELETE by tag deletes it, and a DELETE
// by digest deletes every tag pointing at the digest.
func (g *Guard) tagOps(ctx context.Context, r *http.Request, rt Route, body []byte) (map[string]pauth.TagOp, error) {
	named, err := reference.WithName(rt.Name)
	if err != nil {
		return nil, err
	}
	repo, err := g.Repos.Repository(ctx, named)
	if err != nil {
		return nil, err
	}
	tags := repo.Tags(ctx)
	ops := map[string]pauth.TagOp{}
	switch {
	case r.Method == http.MethodPut && rt.Tag != "":
		cur, err := tags.Get(ctx, rt.Tag)
		var unknown distribution.ErrTagUnknown
		switch {
		case errors.As(err, &unknown):
			ops[rt.Tag] = pauth.TagCreate
		case err != nil:
			return nil, err
		case cur.Digest != digest.FromBytes(body):
			ops[rt.Tag] = pauth.TagOverwrite
		}
	case r.Method == http.MethodDelete && rt.Tag != "":
		ops[rt.Tag] = pauth.TagDelete
	case r.Method == http.MethodDelete && rt.Digest != "":
		pointing, err := tags.Lookup(ctx, v1.Descriptor{Digest: rt.Digest})
		if err != nil {
			var unknown distribution.ErrRepositoryUnknown
			if errors.As(err, &unknown) {
				return ops, nil
			}
			return nil, err
		}
		for _, t := range pointing {
			ops[t] = pauth.TagDelete
		}
	}
	return ops, nil
}

// checkTags enforces tag rules for a manifest write by the request's
// caller. It returns nil to go on (also when the token does not grant the
// write: distribution answers with the challenge), DENIED when a rule
// refuses the write, or an internal error when the tags cannot be read.
func (g *Guard) checkTags(r *http.Request, rt Route, body []byte) error {
	c := callerOf(r)
	if !c.Granted() {
		return nil
	}
	action := "push"
	if r.Method == http.MethodDelete {
		action = "delete"
	}
	ctx := r.Context()
	ops, err := g.tagOps(ctx, r, rt, body)
	if err != nil {
		return api.Internal("could not look the repository's tags up", fmt.Errorf("look up the tags of %s: %w", rt.Name, err))
	}
	subject := g.Tags.SubjectForLogin(c.Login)
	for tag, op := range ops {
		ruling := g.Tags.TagDecision(subject, rt.Name, tag, op)
		if ruling.Allowed {
			continue
		}
		msg := fmt.Sprintf("%s of tag %q in %s is not allowed: %s", opName(op), tag, rt.Name, ruling.Reason)
		if ruling.Rule != "" {
			msg += " (tag rule " + ruling.Rule + ")"
		}
		g.Audit.RecordWrite(ctx, audit.Write{
			Subject: c.Login, Addr: token.RemoteHost(r), Action: action, Repository: rt.Name, Tag: tag,
			Digest: rt.Digest.String(), Err: errors.New(ruling.Reason), Rule: ruling.Rule, RequestID: server.RequestID(ctx),
		})
		return errcode.ErrorCodeDenied.WithMessage(msg)
	}
	return nil
}

func opName(op pauth.TagOp) string {
	switch op {
	case pauth.TagCreate:
		return "creation"
	case pauth.TagOverwrite:
		return "moving"
	default:
		return "deletion"
	}
}

// auditWrite records a successful manifest push or delete.
func (g *Guard) auditWrite(r *http.Request, rt Route, status int, dgst string) {
	if g.Audit == nil || status < 200 || status > 299 {
		return
	}
	action := "push"
	if r.Method == http.MethodDelete {
		action = "delete"
	}
	g.Audit.RecordWrite(r.Context(), audit.Write{
		Subject: callerOf(r).Login, Addr: token.RemoteHost(r), Action: action, Repository: rt.Name, Tag: rt.Tag,
		Digest: dgst, RequestID: server.RequestID(r.Context()),
	})
}
