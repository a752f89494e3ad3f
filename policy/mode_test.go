package policy

import (
	"encoding/json"
	"testing"
)

func TestParseMode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    Mode
		wantErr string
	}{
		{in: "enforce", want: ModeEnforce},
		{in: "quarantine", want: ModeQuarantine},
		{in: "audit", want: ModeAudit},
		{in: "", wantErr: `must be enforce, quarantine or audit, got ""`},
		{in: "Enforce", wantErr: `must be enforce, quarantine or audit, got "Enforce"`},
	}
	for _, tt := range tests {
		got, err := ParseMode(tt.in)
		if tt.wantErr != "" {
			if err == nil || err.Error() != tt.wantErr {
				t.Errorf("ParseMode(%q) = %q, %v, want error %s", tt.in, got, err, tt.wantErr)
			}
			if Mode(tt.in).Valid() {
				t.Errorf("Mode(%q).Valid()", tt.in)
			}
			continue
		}
		if err != nil || got != tt.want || !got.Valid() || got.String() != tt.in {
			t.Errorf("ParseMode(%q) = %q, %v, want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestModeText(t *testing.T) {
	t.Parallel()
	var v struct {
		Mode Mode `json:"mode"`
	}
	if err := json.Unmarshal([]byte(`{"mode":"quarantine"}`), &v); err != nil || v.Mode != ModeQuarantine {
		t.Errorf("decoded %q, %v", v.Mode, err)
	}
	err := json.Unmarshal([]byte(`{"mode":"block"}`), &v)
	if err == nil || err.Error() != `must be enforce, quarantine or audit, got "block"` {
		t.Errorf("decoding block: %v", err)
	}
	out, err := json.Marshal(v)
	if err != nil || string(out) != `{"mode":"quarantine"}` {
		t.Errorf("Marshal = %s, %v", out, err)
	}
}
