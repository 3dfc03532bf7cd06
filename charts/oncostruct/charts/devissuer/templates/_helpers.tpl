{{/*
Chart-scoped helpers of the devissuer subchart ("devissuer." prefix: Helm
shares named templates across the whole chart tree).
*/}}

{{- define "devissuer.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "devissuer.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "devissuer.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "devissuer.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "devissuer.selectorLabels" -}}
app.kubernetes.io/name: {{ include "devissuer.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "devissuer.labels" -}}
helm.sh/chart: {{ include "devissuer.chart" . }}
{{ include "devissuer.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: token-issuer
app.kubernetes.io/part-of: oncostruct
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "devissuer.image" -}}
{{- $registry := .Values.global.imageRegistry | default .Values.image.registry -}}
{{- $repository := .Values.image.repository -}}
{{- if $registry -}}
{{- $repository = printf "%s/%s" $registry $repository -}}
{{- end -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" $repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repository (.Values.global.imageTag | default .Values.image.tag | default .Chart.AppVersion | toString) -}}
{{- end -}}
{{- end -}}

{{- define "devissuer.imagePullSecrets" -}}
{{- $secrets := concat (.Values.global.imagePullSecrets | default list) (.Values.image.pullSecrets | default list) | uniq -}}
{{- if $secrets -}}
imagePullSecrets:
{{- range $secrets }}
  - name: {{ . | quote }}
{{- end }}
{{- end -}}
{{- end -}}

{{- define "devissuer.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "devissuer.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The `iss` claim of issued tokens: issuerUrl, else the in-cluster Service URL. Set global.auth.issuer to the same value. */}}
{{- define "devissuer.issuerUrl" -}}
{{- .Values.issuerUrl | default (printf "http://%s:%d" (include "devissuer.fullname" .) (int .Values.service.ports.http)) -}}
{{- end -}}

{{- define "devissuer.probe" -}}
httpGet:
  path: {{ .path }}
  port: http
{{ omit .probe "enabled" | toYaml }}
{{- end -}}

{{/* Check the values and fail with a readable message. */}}
{{- define "devissuer.validateValues" -}}
{{- $messages := list -}}
{{- if not .Values.existingSecret -}}
{{- $messages = append $messages (printf "devissuer: existingSecret is empty: create a Secret holding the RSA signing key (PEM, key %q) and the client credentials (JSON {client_id: secret}, key %q) and set devissuer.existingSecret to its name." .Values.existingSecretKeyKey .Values.existingSecretClientsKey) -}}
{{- end -}}
{{- if not .Values.existingSecretKeyKey -}}
{{- $messages = append $messages "devissuer: existingSecretKeyKey is empty: name the key of the PEM signing key in existingSecret." -}}
{{- end -}}
{{- if $messages -}}
{{- printf "\n\nVALUES VALIDATION:\n%s" (join "\n" $messages) | fail -}}
{{- end -}}
{{- end -}}
