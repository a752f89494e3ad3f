package config

import "time"

// Reload configures reloading while the registry runs. SIGHUP always
// reloads the configuration and every file it names; Watch adds a check
// of those files every Interval.
type Reload struct {
	// Watch reloads when the configuration file, or a file a setting that
	// changes live names (password and htpasswd files, token keys, trust
	// keys and stores, webhook files, the TLS pair), changes. Default false.
	Watch bool `yaml:"watch"`
	// Interval between two checks of the files; default 5s.
	Interval Duration `yaml:"interval"`
}

func (r *Reload) provision() {
	if r.Interval == 0 {
		r.Interval = Duration(5 * time.Second)
	}
}

func (r Reload) validate(bad func(key, format string, args ...any)) {
	if r.Interval < Duration(time.Second) {
		bad("reload.interval", "must be at least 1s, got %s", r.Interval.D())
	}
}
