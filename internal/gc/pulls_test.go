package gc

import (
	"context"
	"testing"
	"time"

	"github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
	"github.com/opencontainers/go-digest"
)

// TestPullsDue: a pull is due until it is recorded, then not until the
// interval has passed; a nil recorder never writes.
func TestPullsDue(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	p, err := NewPulls(inmemory.New(), func() time.Time { return now }, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	d := digest.FromString("manifest")
	if !p.Due("team/app", d) {
		t.Error("never recorded: not due")
	}
	if err := p.Record(ctx, "team/app", d); err != nil {
		t.Fatal(err)
	}
	if last, err := p.Last(ctx, "team/app", d); err != nil || !last.Equal(now) {
		t.Errorf("Last = %v, %v; want %v", last, err, now)
	}
	if p.Due("team/app", d) {
		t.Error("just recorded: due")
	}
	if !p.Due("team/other", d) {
		t.Error("another repository's pull: not due")
	}
	now = now.Add(time.Hour)
	if !p.Due("team/app", d) {
		t.Error("an interval later: not due")
	}
	var none *Pulls
	if none.Due("team/app", d) {
		t.Error("nil recorder: due")
	}
}
