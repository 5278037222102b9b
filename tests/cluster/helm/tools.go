//go:build tools

// Package tools pins helm's command package in go.mod; cluster.sh builds it with `go build`.
package tools

import _ "helm.sh/helm/v4/cmd/helm"
