package app

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// gatherDistribution returns distribution's metric families ("registry_*")
// from the default Prometheus registry, where its packages register them.
func gatherDistribution() ([]*dto.MetricFamily, error) {
	all, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		return nil, err
	}
	out := all[:0]
	for _, mf := range all {
		if strings.HasPrefix(mf.GetName(), "registry_") {
			out = append(out, mf)
		}
	}
	return out, nil
}
