package vulndb

import (
	"regexp"
	"strings"
	"sync"
)

// suseProduct matches a SUSE ecosystem naming a product or module at a major release and
// service pack, with a support-phase suffix or not: "SUSE:Linux Enterprise Module for
// Basesystem 15 SP5", "SUSE:Linux Enterprise Server 15 SP5-LTSS", "SUSE:Linux Enterprise
// Server 12". Products numbered otherwise ("SUSE:Linux Enterprise Micro 5.5") do not match.
var suseProduct = sync.OnceValue(func() *regexp.Regexp {
	return regexp.MustCompile(`^SUSE:.* ([0-9]+(?: SP[0-9]+)?)(?:-[A-Za-z0-9-]+)?$`)
})

// ubuntuLTS matches the ecosystem of an Ubuntu long-term release's standard repositories.
var ubuntuLTS = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^Ubuntu:[0-9]{2}\.[0-9]{2}:LTS$`) })

// IndexEcosystem returns the ecosystem an affected entry is indexed, and so looked up,
// under: the record's own, except for the two distributions whose ecosystems name product
// streams finer than an image's os-release can tell (the inventory package gives their
// packages these keys):
//
//   - Red Hat names the repository stream, "Red Hat:enterprise_linux:9::appstream", which
//     the rpm database does not record; such entries are indexed under the release,
//     "Red Hat:enterprise_linux:9". Other Red Hat products and the extended-support streams
//     ("Red Hat:rhel_eus:9.2::baseos") keep their own.
//   - SUSE files packages under the product or module that ships them and its support
//     phase; entries of a product at a service pack are indexed under the service pack,
//     "SUSE:15 SP5": SUSE builds one code stream per service pack.
//
// Ubuntu marks its long-term releases, "Ubuntu:22.04:LTS"; their entries are indexed under
// the release, "Ubuntu:22.04", which is what os-release's VERSION_ID gives. Ubuntu Pro's
// streams ("Ubuntu:Pro:22.04:LTS", packages with +esm versions from a subscription
// repository) and other products ("Ubuntu:Nvidia-BlueField:22.04:LTS") keep their own.
func IndexEcosystem(eco string) string {
	if ubuntuLTS().MatchString(eco) {
		return strings.TrimSuffix(eco, ":LTS")
	}
	if rest, ok := strings.CutPrefix(eco, "Red Hat:enterprise_linux:"); ok {
		if release, _, ok := strings.Cut(rest, "::"); ok && release != "" {
			return "Red Hat:enterprise_linux:" + release
		}
		return eco
	}
	if m := suseProduct().FindStringSubmatch(eco); m != nil {
		return "SUSE:" + m[1]
	}
	return eco
}
