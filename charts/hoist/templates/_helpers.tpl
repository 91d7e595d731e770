{{/* The release's full name: the release name, with "-hoist" unless it already says hoist. */}}
{{- define "hoist.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "hoist.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "hoist.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "hoist.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "hoist.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
The one namespace hoist watches and acts in, or "" for every namespace. Namespaced by default
(the release's namespace, or watchNamespace); every namespace only when clusterWide is set.
*/}}
{{- define "hoist.watchNamespace" -}}
{{- if .Values.clusterWide -}}
{{- if .Values.watchNamespace -}}
{{- fail "set watchNamespace (one namespace) or clusterWide=true (every namespace), not both" -}}
{{- end -}}
{{- else -}}
{{- default .Release.Namespace .Values.watchNamespace -}}
{{- end -}}
{{- end -}}

{{/* The shard count: a whole number from 1 to 256; above 1 it needs leader election. */}}
{{- define "hoist.shards" -}}
{{- $n := .Values.shards | int -}}
{{- if or (lt $n 1) (gt $n 256) -}}
{{- fail (printf "shards must be from 1 to 256, not %v" .Values.shards) -}}
{{- end -}}
{{- if and (gt $n 1) (not .Values.leaderElection.enabled) -}}
{{- fail "shards above 1 needs leaderElection.enabled=true: each shard is owned through a Lease" -}}
{{- end -}}
{{- $n -}}
{{- end -}}
