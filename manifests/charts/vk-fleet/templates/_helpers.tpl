{{/* Chart name. */}}
{{- define "vk-fleet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: the prefix of every object. */}}
{{- define "vk-fleet.fullname" -}}
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

{{/* Labels of every object. */}}
{{- define "vk-fleet.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "vk-fleet.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of vk-fleet's pods. */}}
{{- define "vk-fleet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "vk-fleet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The ServiceAccount vk-fleet runs as. */}}
{{- define "vk-fleet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "vk-fleet.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Namespace of tokens, the NATS CA and replica Leases. */}}
{{- define "vk-fleet.tokenNamespace" -}}
{{- default "kube-system" .Values.tokenNamespace }}
{{- end }}

{{/* Image reference. */}}
{{- define "vk-fleet.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Name of the device-facing NATS Service. */}}
{{- define "vk-fleet.natsService" -}}
{{- printf "%s-nats" (include "vk-fleet.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Whether several replicas share the devices (sharding). */}}
{{- define "vk-fleet.sharded" -}}
{{- if .Values.nats.external.enabled }}true{{ end }}
{{- end }}

{{/* Checks across values that the schema cannot say readably. */}}
{{- define "vk-fleet.validate" -}}
{{- $ext := .Values.nats.external }}
{{- if and (gt (int .Values.replicas) 1) (not $ext.enabled) }}
{{- fail "replicas > 1 needs nats.external.enabled=true: replicas share the devices through one NATS, and the embedded server is one per pod" }}
{{- end }}
{{- if and $ext.enabled (not $ext.url) }}
{{- fail "nats.external.enabled=true needs nats.external.url (e.g. tls://nats.nats:4222)" }}
{{- end }}
{{- if and $ext.enabled (not $ext.nkeySecret) }}
{{- fail "nats.external.enabled=true needs nats.external.nkeySecret: a Secret whose key \"seed\" is vk-fleet's service nkey seed" }}
{{- end }}
{{- if and .Values.callout.enabled (not $ext.enabled) }}
{{- fail "callout.enabled=true is for an external NATS (nats.external.enabled=true); the embedded server runs the callout in-process" }}
{{- end }}
{{- if and .Values.callout.enabled (not .Values.callout.issuerSecret) }}
{{- fail "callout.enabled=true needs callout.issuerSecret: a Secret whose key \"seed\" is the account nkey seed signing user JWTs" }}
{{- end }}
{{- if and .Values.callout.systemUser (not .Values.callout.systemPasswordSecret) }}
{{- fail "callout.systemUser needs callout.systemPasswordSecret" }}
{{- end }}
{{- if and .Values.zitadel.issuer (not .Values.zitadel.clientID) }}
{{- fail "zitadel.issuer needs zitadel.clientID (and zitadel.clientSecretSecret or zitadel.keySecret)" }}
{{- end }}
{{- if and .Values.zitadel.issuer (not (or .Values.zitadel.clientSecretSecret .Values.zitadel.keySecret)) }}
{{- fail "zitadel.issuer needs zitadel.clientSecretSecret or zitadel.keySecret to introspect tokens" }}
{{- end }}
{{- end }}
