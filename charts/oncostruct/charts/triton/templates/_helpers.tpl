{{/*
Chart-scoped helpers of the triton subchart ("triton." prefix: Helm shares
named templates across the whole chart tree).
*/}}

{{- define "triton.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* "<release>-triton" unless fullnameOverride; the reconstruction subchart's default TRITON_URL relies on this rule. */}}
{{- define "triton.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "triton.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "triton.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "triton.selectorLabels" -}}
app.kubernetes.io/name: {{ include "triton.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "triton.labels" -}}
helm.sh/chart: {{ include "triton.chart" . }}
{{ include "triton.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: inference-server
app.kubernetes.io/part-of: oncostruct
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The Triton image (nvcr.io/nvidia/tritonserver:<tag>). global.imageRegistry does not apply: it is not an OncoStruct image. */}}
{{- define "triton.image" -}}
{{- $repository := .Values.image.repository -}}
{{- if .Values.image.registry -}}
{{- $repository = printf "%s/%s" .Values.image.registry $repository -}}
{{- end -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" $repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repository (.Values.image.tag | toString) -}}
{{- end -}}
{{- end -}}

{{/* The image of the init container that fills an emptyDir model repository (an OncoStruct image: the globals apply). */}}
{{- define "triton.initImage" -}}
{{- $image := .Values.modelRepository.initContainer.image -}}
{{- $registry := .Values.global.imageRegistry | default $image.registry -}}
{{- $repository := $image.repository -}}
{{- if $registry -}}
{{- $repository = printf "%s/%s" $registry $repository -}}
{{- end -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $repository $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repository (.Values.global.imageTag | default $image.tag | toString) -}}
{{- end -}}
{{- end -}}

{{- define "triton.imagePullSecrets" -}}
{{- $secrets := concat (.Values.global.imagePullSecrets | default list) (.Values.image.pullSecrets | default list) | uniq -}}
{{- if $secrets -}}
imagePullSecrets:
{{- range $secrets }}
  - name: {{ . | quote }}
{{- end }}
{{- end -}}
{{- end -}}

{{- define "triton.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "triton.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* A probe from its values block on Triton's HTTP port. */}}
{{- define "triton.probe" -}}
httpGet:
  path: {{ .path }}
  port: http
{{ omit .probe "enabled" | toYaml }}
{{- end -}}

{{/* Check the values and fail with a readable message. */}}
{{- define "triton.validateValues" -}}
{{- $messages := list -}}
{{- if not (or .Values.image.tag .Values.image.digest) -}}
{{- $messages = append $messages "triton: image.tag and image.digest are both empty: set the tritonserver tag (e.g. 24.10-py3)." -}}
{{- end -}}
{{- if and .Values.gpu.enabled (lt (int .Values.gpu.count) 1) -}}
{{- $messages = append $messages "triton: gpu.enabled is true but gpu.count is below 1: set gpu.count or gpu.enabled=false to run on CPU." -}}
{{- end -}}
{{- if and (not .Values.modelRepository.existingClaim) .Values.modelRepository.initContainer.enabled (not .Values.modelRepository.initContainer.command) -}}
{{- $messages = append $messages "triton: modelRepository.initContainer.command is empty: give the command that fills the model repository." -}}
{{- end -}}
{{- if and (not .Values.modelRepository.existingClaim) .Values.modelRepository.initContainer.enabled (not (or .Values.global.imageTag .Values.modelRepository.initContainer.image.tag .Values.modelRepository.initContainer.image.digest)) -}}
{{- $messages = append $messages "triton: modelRepository.initContainer.image.tag, its digest and global.imageTag are all empty: set one of them." -}}
{{- end -}}
{{- if $messages -}}
{{- printf "\n\nVALUES VALIDATION:\n%s" (join "\n" $messages) | fail -}}
{{- end -}}
{{- end -}}
