#!/usr/bin/env bash
# test.sh is the whole test suite: it installs the pinned tools the tests
# drive (cached outside the clone), then runs vet, a format check and every
# test, end-to-end suites included. Unit tests alone, while you work:
#   go test $(go list ./... | grep -v /e2e)
set -euo pipefail
cd "$(dirname "$0")/.."

bin=$(scripts/install-tools.sh | tail -n 1)
export PATH="$bin:$PATH"

unformatted=$(gofmt -l $(git ls-files '*.go'))
if [ -n "$unformatted" ]; then
  echo "gofmt would change: $unformatted" >&2
  exit 1
fi
go vet ./...
# End-to-end tests mostly wait on processes and containers: four at once.
go test -race -count=1 -timeout 40m -parallel 4 ./...

# The chart's objects decoded into the Kubernetes API types: a module of its
# own, so k8s.io/api stays out of the registry's module.
(cd charts/portcullis/test && go vet ./... && go test -race -count=1 ./...)
