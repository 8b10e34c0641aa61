{{/* Chart name, overridable. */}}
{{- define "airgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name used as the prefix of every object. Truncated to 63 characters
because some Kubernetes name fields are limited to that (DNS label).
*/}}
{{- define "airgate.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "airgate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels every object carries. */}}
{{- define "airgate.labels" -}}
helm.sh/chart: {{ include "airgate.chart" . }}
{{ include "airgate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: controller
{{- end }}

{{/* Labels that select the controller pods; immutable once deployed. */}}
{{- define "airgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "airgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "airgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "airgate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "airgate.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The Service whose address goes into Ingress status, as namespace/name. */}}
{{- define "airgate.publishService" -}}
{{- if .Values.publishService.pathOverride }}
{{- .Values.publishService.pathOverride }}
{{- else }}
{{- printf "%s/%s" .Release.Namespace (include "airgate.fullname" .) }}
{{- end }}
{{- end }}

{{/*
Rules for the namespaced kinds the controller watches and the status and
Events it writes. Used by the ClusterRole (all namespaces) or by one Role per
watched namespace. Deliberately no write verb on any spec: status subresources,
Events and (in rbac-lease) one Lease only.
*/}}
{{- define "airgate.namespacedRules" -}}
- apiGroups: [""]
  resources: [services, secrets]
  verbs: [get, list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [get, list, watch]
- apiGroups: [networking.k8s.io]
  resources: [ingresses]
  verbs: [get, list, watch]
- apiGroups: [networking.k8s.io]
  resources: [ingresses/status]
  verbs: [get, update, patch]
- apiGroups: [airgate.dev]
  resources: [airoutes]
  verbs: [get, list, watch]
- apiGroups: [airgate.dev]
  resources: [airoutes/status]
  verbs: [get, update, patch]
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end }}
