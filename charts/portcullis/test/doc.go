// Package test checks the Portcullis Helm chart without a cluster: it
// renders the chart with each values file under ci/ and decodes every
// object strictly into the Kubernetes API types. It is a module of its own
// so that k8s.io/api stays out of the registry's module; scripts/test.sh
// runs it.
package test
