{{/*
What hoist does in the namespaces it watches, and nothing more; each rule names the code that
needs it. Rendered into a Role of the one namespace hoist watches, or into a ClusterRole when
clusterWide is set.
*/}}
{{- define "hoist.rules" -}}
# Scalers: the controller lists and watches them, re-reads one (get) after a status write
# conflicted, removes the hoist.dev/retry annotation and adds/removes its finalizer
# hoist.dev/operation (patch; server-side apply of metadata.finalizers), writes their status
# (server-side apply on /status), and the builtin autoscaler writes the desired count through
# their /scale (patch).
- apiGroups: [hoist.dev]
  resources: [scalers]
  verbs: [get, list, watch, patch]
- apiGroups: [hoist.dev]
  resources: [scalers/status, scalers/scale]
  verbs: [patch]
# Targets: watched to react to their changes; read (the object carries what its /scale
# reports), and resized through /scale only.
- apiGroups: [apps]
  resources: [statefulsets, deployments, replicasets]
  verbs: [get, list, watch]
- apiGroups: [apps]
  resources: [statefulsets/scale, deployments/scale, replicasets/scale]
  verbs: [patch]
# The target's pods: listed for the hook context, the leaving ones annotated
# (controller.kubernetes.io/pod-deletion-cost, hoist.dev/leaving), and those marks removed
# again when the operation ends.
- apiGroups: [""]
  resources: [pods]
  verbs: [list, patch]
# Plugin ConfigMaps (selected by the label hoist.dev/plugin).
- apiGroups: [""]
  resources: [configmaps]
  verbs: [list, watch]
# Hook secrets and TLS material: read by name (get) when a hook is called; never listed.
- apiGroups: [""]
  resources: [secrets]
  {{- with .Values.rbac.secretNames }}
  resourceNames: {{ toJson . }}
  {{- end }}
  verbs: [get]
- apiGroups: [""]
  resources: [configmaps]
  {{- with .Values.rbac.caBundleConfigMapNames }}
  resourceNames: {{ toJson . }}
  {{- end }}
  verbs: [get]
# Events for every stage (events.k8s.io/v1: created, then patched as a series repeats).
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
# Every HorizontalPodAutoscaler (list, watch): one aimed at a Scaler's workload itself (a
# user's own, or KEDA's for a ScaledObject) fights the Scaler; hoist reports it in the
# TargetConflict condition and a newer Scaler starts nothing.
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [list, watch]
{{- if .Values.rbac.hpa }}
# autoscaling.hpa: the HorizontalPodAutoscaler hoist owns for a Scaler: read first (get: one
# of that name that hoist does not own is never taken over), server-side applied (patch, and
# create for the first apply), watched, found by label and deleted when the mode changes.
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [get, list, watch, create, patch, delete]
{{- end }}
{{- if .Values.rbac.keda }}
# autoscaling.keda: the KEDA ScaledObject hoist owns for a Scaler, handled like the HPA.
- apiGroups: [keda.sh]
  resources: [scaledobjects]
  verbs: [get, list, watch, create, patch, delete]
{{- end }}
{{- with .Values.rbac.extraTargetRules }}
{{ toYaml . }}
{{- end }}
{{- end -}}
