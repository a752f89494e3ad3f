package gc

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
)

// plan is what a collection decided to delete, and the marking that
// decided it (which the sweep extends with what it spares).
type plan struct {
	inv       *inventory
	marking   *marking
	tags      []Deleted
	manifests []Deleted
	blobs     []Deleted
	uploads   []Deleted
	kept      Report // the kept counts
	links     map[digest.Digest][]link
}

func (p *plan) all() []Deleted {
	return slices.Concat(p.tags, p.manifests, p.blobs, p.uploads)
}

// count fills the kept counts into rep.
func (p *plan) count(rep *Report) {
	rep.Tags.Kept, rep.Manifests.Kept, rep.Blobs.Kept = p.kept.Tags.Kept, p.kept.Manifests.Kept, p.kept.Blobs.Kept
}

func (c *Collector) old(t time.Time) bool { return c.now().Sub(t) >= c.grace }

// plan marks everything live and lists the rest, oldest evidence first:
// tags, then manifests, then blobs, then uploads.
func (c *Collector) plan(ctx context.Context, inv *inventory) (*plan, error) {
	m := newMarking(inv, &contents{driver: c.driver, parsed: map[digest.Digest]refs{}})
	if err := m.prefetch(ctx, c.workers); err != nil {
		return nil, err
	}
	p := &plan{inv: inv, marking: m}
	names := make([]string, 0, len(inv.repos))
	for n := range inv.repos {
		names = append(names, n)
	}
	slices.Sort(names)
	unkept := map[string]map[string]bool{}
	cosign := map[string]map[string]digest.Digest{}
	for _, name := range names {
		r := inv.repos[name]
		reserved := slices.Contains(c.reserved, name)
		cosign[name] = map[string]digest.Digest{}
		unkept[name] = map[string]bool{}
		if pol := c.retention.policyFor(name); pol != nil && !reserved {
			var candidates []*tagState
			for _, t := range r.tags {
				if _, ok := cosignTag(t.name); ok || !c.old(t.modified) || c.protected(name, t.name) {
					continue
				}
				candidates = append(candidates, t)
			}
			lastUse := func(t *tagState) time.Time {
				if pulled := r.pulls[t.digest]; pulled.After(t.modified) {
					return pulled
				}
				return t.modified
			}
			for _, t := range pol.unkept(candidates, lastUse, c.now()) {
				unkept[name][t.name] = true
			}
		}
		for _, t := range r.tags {
			if s, ok := cosignTag(t.name); ok && c.old(t.modified) && !reserved {
				cosign[name][t.name] = s
				continue
			}
			if unkept[name][t.name] {
				continue
			}
			if err := m.manifest(ctx, r, t.digest); err != nil {
				return nil, err
			}
		}
		for d, mod := range r.revisions {
			if reserved || !c.untagged || !c.old(mod) {
				if err := m.manifest(ctx, r, d); err != nil {
					return nil, err
				}
			}
		}
	}
	for _, name := range names {
		if err := m.closure(ctx, inv.repos[name], c.old, cosign[name]); err != nil {
			return nil, err
		}
	}
	for _, name := range names {
		r := inv.repos[name]
		// Manifests of cosign's tags for deleted subjects: their tag names
		// the subject, their content does not.
		ofDeleted := map[digest.Digest]bool{}
		tags := make([]*tagState, 0, len(r.tags))
		for _, t := range r.tags {
			tags = append(tags, t)
		}
		slices.SortFunc(tags, func(a, b *tagState) int { return strings.Compare(a.name, b.name) })
		for _, t := range tags {
			switch {
			case unkept[name][t.name]:
				p.tags = append(p.tags, Deleted{Kind: "tag", Repository: name, Tag: t.name, Digest: t.digest, Reason: ReasonRetention})
			case cosign[name][t.name] != "" && !m.isLive(name, t.digest):
				p.tags = append(p.tags, Deleted{Kind: "tag", Repository: name, Tag: t.name, Digest: t.digest, Reason: ReasonSubjectDeleted})
				ofDeleted[t.digest] = true
			default:
				p.kept.Tags.Kept++
			}
		}
		revs := make([]digest.Digest, 0, len(r.revisions))
		for d := range r.revisions {
			revs = append(revs, d)
		}
		slices.Sort(revs)
		for _, d := range revs {
			if m.isLive(name, d) {
				p.kept.Manifests.Kept++
				continue
			}
			reason := ReasonUntagged
			if refs, err := m.contents.get(ctx, stored(r, d)); ofDeleted[d] || (err == nil && refs.subject != "") {
				reason = ReasonSubjectDeleted
			}
			p.manifests = append(p.manifests, Deleted{Kind: "manifest", Repository: name, Digest: d, Reason: reason})
		}
		ids := make([]string, 0, len(r.uploads))
		for id, last := range r.uploads {
			if c.now().Sub(last) >= max(c.grace, abandonedAfter) {
				ids = append(ids, id)
			}
		}
		slices.Sort(ids)
		for _, id := range ids {
			p.uploads = append(p.uploads, Deleted{Kind: "upload", Repository: name, Upload: id, Reason: ReasonAbandoned})
		}
	}
	blobs := make([]digest.Digest, 0, len(inv.blobs))
	for d := range inv.blobs {
		blobs = append(blobs, d)
	}
	slices.Sort(blobs)
	for _, d := range blobs {
		b := inv.blobs[d]
		if m.blobs[d] || !c.old(b.modified) {
			p.kept.Blobs.Kept++
			continue
		}
		p.blobs = append(p.blobs, Deleted{Kind: "blob", Digest: d, Size: b.size, Reason: ReasonUnreferenced})
	}
	return p, nil
}
