package scanner

import (
	"math"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"
)

// stateCollector exports what the scanner knows now, as gauges computed at
// the scrape from memory: the vulnerability database's age and the images
// by the worst severity of their findings.
type stateCollector struct {
	s          *Service
	dbAge      *prometheus.Desc
	vulnerable *prometheus.Desc
}

func newStateCollector(s *Service) *stateCollector {
	return &stateCollector{
		s: s,
		dbAge: prometheus.NewDesc("portcullis_scan_db_age_seconds",
			"Age of the loaded vulnerability database: now minus the newest modified time of its records; +Inf before one is loaded.", nil, nil),
		vulnerable: prometheus.NewDesc("portcullis_scan_vulnerable_images",
			"Scanned images (repository and digest) whose worst finding is of this severity, as this node remembers them now.", []string{"severity"}, nil),
	}
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.dbAge
	ch <- c.vulnerable
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	age := math.Inf(1)
	if db := c.s.database(); db != nil {
		age = c.s.now().Sub(db.Modified).Seconds()
		if age < 0 {
			age = 0
		}
	}
	ch <- prometheus.MustNewConstMetric(c.dbAge, prometheus.GaugeValue, age)
	counts, err := c.s.store.vuln.counts()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.vulnerable, err)
		return
	}
	for _, l := range severities {
		ch <- prometheus.MustNewConstMetric(c.vulnerable, prometheus.GaugeValue, float64(counts[l]), strings.ToLower(string(l)))
	}
}

// observeState registers what the scanner knows now (the database's age,
// the vulnerable images, counted from the metadata database meta) and puts
// the scan counts at 0 from the start, for rates and alerts.
func (s *Service) observeState(reg prometheus.Registerer, meta *bolt.DB) error {
	s.store.vuln = &vulnerable{db: meta}
	for _, result := range []string{"ok", "failed"} {
		s.scans.WithLabelValues(result)
	}
	return reg.Register(newStateCollector(s))
}
