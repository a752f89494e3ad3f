package admission

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/portcullis/portcullis/config"
)

// TestGateMetricsTwice checks that a gate built again over the same
// registry (a reloaded configuration) counts on in the first one's series,
// each of which exists at 0 from the start.
func TestGateMetricsTwice(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	hooks := []config.Webhook{{Name: "review", URL: "http://127.0.0.1:1/review"}}
	first, err := newGateMetrics(reg, hooks)
	if err != nil {
		t.Fatal(err)
	}
	first.refusals.WithLabelValues("tag", "enforce").Inc()
	second, err := newGateMetrics(reg, hooks)
	if err != nil {
		t.Fatalf("second gate: %v", err)
	}
	second.refusals.WithLabelValues("tag", "enforce").Inc()
	if n := testutil.ToFloat64(first.refusals.WithLabelValues("tag", "enforce")); n != 2 {
		t.Errorf("refusals %v, want 2 across both gates", n)
	}
	if n := testutil.CollectAndCount(reg, "portcullis_admission_refusals_total"); n != 6 {
		t.Errorf("%d refusal series, want 6 (3 checks by 2 modes)", n)
	}
	if n := testutil.CollectAndCount(reg, "portcullis_admission_webhook_duration_seconds"); n != 1 {
		t.Errorf("%d webhook latency series, want 1 (review)", n)
	}
}
