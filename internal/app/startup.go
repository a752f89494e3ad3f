package app

// configName names the configuration in effect, for the start-up line.
func (a *App) configName() string {
	if a.opts.ConfigFile == "" {
		return "built-in defaults"
	}
	return a.opts.ConfigFile
}

// authMode says how requests are authorized, for the start-up line.
func (a *App) authMode() string {
	switch {
	case !a.cfg.Auth.Enabled:
		return "off: anyone may pull and push"
	case a.opts.TokenOnly:
		return "token service only"
	case a.cfg.Auth.AnonymousPull:
		return "token, anonymous pull"
	}
	return "token"
}

// metricsMode says where /metrics is served, for the start-up line.
func (a *App) metricsMode() string {
	switch {
	case a.cfg.HTTP.MetricsAddr != "":
		return "on http.metricsAddr " + a.cfg.HTTP.MetricsAddr
	case a.cfg.Auth.Enabled:
		return "on http.addr, catalog scope required"
	}
	return "on http.addr, open"
}
