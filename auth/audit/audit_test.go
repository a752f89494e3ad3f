package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestLog(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	l, err := New(&buf, Options{Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	l.Record(ctx, Event{Kind: KindAuthentication, Subject: "user:alice", Addr: "10.0.0.1", Action: "login", Result: ResultSuccess})
	l.RecordWrite(ctx, Write{Subject: "robot:release", Addr: "10.0.0.2", Action: "tag", Repository: "team/app", Tag: "v1", Digest: "sha256:abc"})
	l.RecordWrite(ctx, Write{Subject: "user:bob", Action: "tag", Repository: "team/app", Tag: "v1", Err: errors.New("tag is immutable"), Rule: "immutable"})
	var nilLog *Log
	nilLog.Record(ctx, Event{Kind: KindWrite}) // a nil Log records nothing

	var got []Event
	for _, line := range bytes.Split(bytes.TrimSpace(buf.Bytes()), []byte("\n")) {
		var e Event
		if err := json.Unmarshal(line, &e); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		got = append(got, e)
	}
	want := []Event{
		{Time: now, Kind: KindAuthentication, Subject: "user:alice", Addr: "10.0.0.1", Action: "login", Result: ResultSuccess},
		{Time: now, Kind: KindWrite, Subject: "robot:release", Addr: "10.0.0.2", Action: "tag", Repository: "team/app", Tag: "v1", Digest: "sha256:abc", Result: ResultSuccess},
		{Time: now, Kind: KindWrite, Subject: "user:bob", Action: "tag", Repository: "team/app", Tag: "v1", Result: ResultDenied, Rule: "immutable", Reason: "tag is immutable"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	if _, err := New(nil, Options{}); err == nil {
		t.Error("nil writer accepted")
	}
}
