// Package scan finds known vulnerabilities in container images, offline.
//
// The work is split so that each image is read once and re-matched cheaply:
//
//	IndexLayer(layer)  → inventory.Layer   per layer, cached by DiffID (LayerCache)
//	Index(image)       → inventory.Image   inventory.Merge of the layer inventories
//	Match(image, db)   → []Finding         against a vulndb.DB; no layer is read
//
// Report puts findings, image and database identity and the policy outcome together; Run is
// the whole `registry scan --archive IMAGE.tar --vulndb DIR` command.
//
// Distribution packages are matched in the ecosystem of the image's release ("Debian:12",
// "Alpine:v3.20", "Rocky Linux:9"): dpkg and apk ones by their source package and source
// version, as Debian and Alpine records name source packages; rpm ones by their own name
// and version, as rpm distributions' records name binary packages (see matchKey for the
// epoch, and vulndb.IndexEcosystem for Red Hat's and SUSE's product streams). Language
// packages are matched by name and version in their ecosystem. Version order is
// osv-scalibr's semantic package.
//
// scan must not import internal/... or the server; it imports go-containerregistry, its own
// sub-packages and the standard library.
package scan
