{{/*
Names, labels and the small renderers every template shares.
*/}}

{{/* The chart's name, overridable. */}}
{{- define "cadbroker.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name of the release's objects: the release name, unless it already contains the chart's. */}}
{{- define "cadbroker.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Labels on every object. */}}
{{- define "cadbroker.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "cadbroker.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: cadbroker
{{- end -}}

{{/* Labels that select the broker's pods (Deployment, Services, PDB, NetworkPolicies). */}}
{{- define "cadbroker.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cadbroker.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The broker's ServiceAccount. */}}
{{- define "cadbroker.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "cadbroker.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The namespace of pools, sessions, workstation pods and the leader Lease. */}}
{{- define "cadbroker.workstationNamespace" -}}
{{- required "workstations.namespace is required" .Values.workstations.namespace -}}
{{- end -}}

{{/* Names of the two PriorityClasses (cluster-scoped, so prefixed with the full name by default). */}}
{{- define "cadbroker.workstationPriorityClass" -}}
{{- default (printf "%s-workstation" (include "cadbroker.fullname" .)) .Values.priorityClasses.workstation.name -}}
{{- end -}}
{{- define "cadbroker.placeholderPriorityClass" -}}
{{- default (printf "%s-placeholder" (include "cadbroker.fullname" .)) .Values.priorityClasses.placeholder.name -}}
{{- end -}}

{{/* Secret holding the gateway's signing key. */}}
{{- define "cadbroker.gatewayKeySecret" -}}
{{- default (printf "%s-gateway-key" (include "cadbroker.fullname" .)) .Values.gateway.keySecret.name -}}
{{- end -}}

{{/* The container image. */}}
{{- define "cadbroker.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/*
One TOML value from a values entry: strings and lists of strings as JSON (which TOML reads the
same), booleans as they are, numbers as integers (YAML numbers reach templates as floats, and
the broker's integer fields refuse "65536.0").
*/}}
{{- define "cadbroker.tomlValue" -}}
{{- if kindIs "string" . -}}
{{- toJson . -}}
{{- else if kindIs "bool" . -}}
{{- ternary "true" "false" . -}}
{{- else if or (kindIs "float64" .) (kindIs "int" .) (kindIs "int64" .) -}}
{{- int64 . -}}
{{- else if kindIs "slice" . -}}
{{- $items := list -}}
{{- range . -}}
{{- if not (kindIs "string" .) -}}
{{- fail (printf "config: only lists of strings are supported, got %v" .) -}}
{{- end -}}
{{- $items = append $items (toJson .) -}}
{{- end -}}
[{{ join ", " $items }}]
{{- else -}}
{{- fail (printf "config: unsupported value %v (%s)" . (kindOf .)) -}}
{{- end -}}
{{- end -}}

{{/*
A flat map as TOML "key = value" lines, keys sorted; null values are left out (the broker's
default applies) and nested maps are refused.
*/}}
{{- define "cadbroker.tomlTable" -}}
{{- $lines := list -}}
{{- range $key := keys . | sortAlpha -}}
{{- $value := index $ $key -}}
{{- if kindIs "map" $value -}}
{{- fail (printf "config: %s: nested tables are not supported here" $key) -}}
{{- end -}}
{{- if not (kindIs "invalid" $value) -}}
{{- $lines = append $lines (printf "%s = %s" $key (include "cadbroker.tomlValue" $value)) -}}
{{- end -}}
{{- end -}}
{{- join "\n" $lines -}}
{{- end -}}
