{{/*
Chart-scoped helpers of the reconstruction subchart. Every name starts with
"reconstruction." because Helm shares named templates across the whole chart tree.
The four service subcharts (clinical, imaging, annotations, reconstruction)
carry the same templates under their own prefix.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "reconstruction.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Object name: fullnameOverride, else "<release>-<name>" (the umbrella ingress relies on this rule). */}}
{{- define "reconstruction.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "reconstruction.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* "<chart>-<version>" for the helm.sh/chart label. */}}
{{- define "reconstruction.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels that select this service's pods; never change them on upgrade. */}}
{{- define "reconstruction.selectorLabels" -}}
app.kubernetes.io/name: {{ include "reconstruction.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Standard labels on every object. */}}
{{- define "reconstruction.labels" -}}
helm.sh/chart: {{ include "reconstruction.chart" . }}
{{ include "reconstruction.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: api
app.kubernetes.io/part-of: oncostruct
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Prefix of every environment variable the service reads (its pydantic-settings env_prefix). */}}
{{- define "reconstruction.envPrefix" -}}
{{- printf "ONCOSTRUCT_%s_" (.Chart.Name | upper) -}}
{{- end -}}

{{/* Python import package of the service. */}}
{{- define "reconstruction.package" -}}
{{- printf "oncostruct_%s" .Chart.Name -}}
{{- end -}}

{{/* Image reference. global.imageRegistry and global.imageTag, when set, win over image.registry and image.tag. */}}
{{- define "reconstruction.image" -}}
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

{{/* imagePullSecrets from global.imagePullSecrets and image.pullSecrets. */}}
{{- define "reconstruction.imagePullSecrets" -}}
{{- $secrets := concat (.Values.global.imagePullSecrets | default list) (.Values.image.pullSecrets | default list) | uniq -}}
{{- if $secrets -}}
imagePullSecrets:
{{- range $secrets }}
  - name: {{ . | quote }}
{{- end }}
{{- end -}}
{{- end -}}

{{/* Name of the ServiceAccount the pods run as. */}}
{{- define "reconstruction.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "reconstruction.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Secret holding the database URL: database.existingSecret, else global.database.existingSecret. */}}
{{- define "reconstruction.databaseSecretName" -}}
{{- .Values.database.existingSecret | default .Values.global.database.existingSecret -}}
{{- end -}}

{{/* Key of the database URL in that Secret. */}}
{{- define "reconstruction.databaseSecretKey" -}}
{{- .Values.database.existingSecretUrlKey | default .Values.global.database.existingSecretUrlKey -}}
{{- end -}}

{{/* Secret holding the client secret: auth.existingSecret, else global.auth.existingSecret. */}}
{{- define "reconstruction.authSecretName" -}}
{{- .Values.auth.existingSecret | default .Values.global.auth.existingSecret -}}
{{- end -}}

{{/*
Base URLs of the peers this service calls, keyed by peer name. An empty value
in .Values.upstreams means the peer subchart in the same release.
*/}}
{{- define "reconstruction.upstreamDefaults" -}}
clinical: {{ printf "http://%s-clinical:8081/fhir" .Release.Name | quote }}
imaging: {{ printf "http://%s-imaging:8082/dicomweb" .Release.Name | quote }}
annotations: {{ printf "http://%s-annotations:8083/annotations/v1" .Release.Name | quote }}
triton: {{ printf "%s-triton:8000" .Release.Name | quote }}
{{- end -}}

{{/* Path prefix under which the app serves its API (fixed by the app; the ingress routes it as-is). */}}
{{- define "reconstruction.pathPrefix" -}}
{{- get (dict "clinical" "/fhir" "imaging" "/dicomweb" "annotations" "/annotations/v1" "reconstruction" "/reconstruction/v1") .Chart.Name -}}
{{- end -}}

{{/* Public base URL (BASE_URL): baseUrl, else global.publicUrl + the path prefix, else empty (the service default). */}}
{{- define "reconstruction.baseUrl" -}}
{{- if .Values.baseUrl -}}
{{- .Values.baseUrl -}}
{{- else if .Values.global.publicUrl -}}
{{- printf "%s%s" (trimSuffix "/" .Values.global.publicUrl) (include "reconstruction.pathPrefix" .) -}}
{{- end -}}
{{- end -}}

{{/* The uvicorn command line (the same as the image's CMD, with the configured port). */}}
{{- define "reconstruction.defaultArgs" -}}
- --factory
- {{ printf "%s.app:create_app" (include "reconstruction.package" .) }}
- --host
- "0.0.0.0"
- --port
- {{ .Values.containerPorts.http | quote }}
- --no-access-log
- --proxy-headers
- --forwarded-allow-ips
- {{ .Values.forwardedAllowIps | quote }}
{{- end -}}

{{/* Environment of the service container. Secrets only through secretKeyRef. */}}
{{- define "reconstruction.env" -}}
{{- $prefix := include "reconstruction.envPrefix" . -}}
{{- $upstreamDefaults := include "reconstruction.upstreamDefaults" . | fromYaml -}}
- name: {{ $prefix }}DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "reconstruction.databaseSecretName" . | quote }}
      key: {{ include "reconstruction.databaseSecretKey" . | quote }}
- name: {{ $prefix }}DB_SCHEMA
  value: {{ .Values.database.schema | default .Chart.Name | quote }}
- name: {{ $prefix }}RUN_MIGRATIONS
  value: {{ and .Values.database.runMigrations (not .Values.migrationJob.enabled) | ternary "true" "false" | quote }}
- name: {{ $prefix }}AUTH_ISSUER
  value: {{ .Values.global.auth.issuer | quote }}
{{- with .Values.global.auth.jwksUrl }}
- name: {{ $prefix }}AUTH_JWKS_URL
  value: {{ . | quote }}
{{- end }}
{{- with .Values.global.auth.tokenUrl }}
- name: {{ $prefix }}AUTH_TOKEN_URL
  value: {{ . | quote }}
{{- end }}
- name: {{ $prefix }}AUTH_AUDIENCE
  value: {{ .Values.global.auth.audience | quote }}
{{- if .Values.auth.clientId }}
- name: {{ $prefix }}AUTH_CLIENT_ID
  value: {{ .Values.auth.clientId | quote }}
- name: {{ $prefix }}AUTH_CLIENT_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ include "reconstruction.authSecretName" . | quote }}
      key: {{ .Values.auth.existingSecretClientSecretKey | quote }}
{{- end }}
- name: {{ $prefix }}LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
{{- range $name, $value := .Values.settings }}
- name: {{ $prefix }}{{ $name | snakecase | upper }}
  value: {{ kindIs "slice" $value | ternary (toJson $value) (toString $value) | quote }}
{{- end }}
{{- if .Values.maxBodyBytes }}
- name: {{ $prefix }}MAX_BODY_BYTES
  value: {{ .Values.maxBodyBytes | int64 | toString | quote }}
{{- end }}
{{- with (include "reconstruction.baseUrl" .) }}
- name: {{ $prefix }}BASE_URL
  value: {{ . | quote }}
{{- end }}
{{- if (.Values.storage).enabled }}
- name: {{ $prefix }}STORAGE_PATH
  value: {{ .Values.storage.mountPath | quote }}
{{- end }}
{{- range $peer, $url := .Values.upstreams }}
- name: {{ printf "%s%s_URL" $prefix ($peer | upper) }}
  value: {{ $url | default (get $upstreamDefaults $peer) | quote }}
{{- end }}
{{- with .Values.extraEnvVars }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* A probe from its values block; path and port are fixed by the service. */}}
{{- define "reconstruction.probe" -}}
httpGet:
  path: {{ .path }}
  port: http
{{ omit .probe "enabled" | toYaml }}
{{- end -}}

{{/*
Check the values and fail with a readable message. Called from the
Deployment, so a broken configuration never renders.
*/}}
{{- define "reconstruction.validateValues" -}}
{{- $messages := list -}}
{{- $upstreamDefaults := include "reconstruction.upstreamDefaults" . | fromYaml -}}
{{- if not (include "reconstruction.databaseSecretName" .) -}}
{{- $messages = append $messages (printf "%s: database.existingSecret and global.database.existingSecret are both empty. Create a Secret holding the SQLAlchemy URL (postgresql+asyncpg://user:password@host:5432/db) and set global.database.existingSecret to its name." .Chart.Name) -}}
{{- end -}}
{{- if not (include "reconstruction.databaseSecretKey" .) -}}
{{- $messages = append $messages (printf "%s: database.existingSecretUrlKey and global.database.existingSecretUrlKey are both empty: name the key of the database URL in the database Secret." .Chart.Name) -}}
{{- end -}}
{{- if not .Values.global.auth.issuer -}}
{{- $messages = append $messages (printf "%s: global.auth.issuer is empty: set the OIDC issuer URL whose tokens the services accept." .Chart.Name) -}}
{{- end -}}
{{- if and .Values.auth.clientId (not (include "reconstruction.authSecretName" .)) -}}
{{- $messages = append $messages (printf "%s: auth.clientId is set but auth.existingSecret and global.auth.existingSecret are both empty: create a Secret with the client secret (key %q) and set global.auth.existingSecret, or set auth.clientId to \"\"." .Chart.Name .Values.auth.existingSecretClientSecretKey) -}}
{{- end -}}
{{- if and .Values.auth.clientId (not .Values.auth.existingSecretClientSecretKey) -}}
{{- $messages = append $messages (printf "%s: auth.existingSecretClientSecretKey is empty: name the key of the client secret." .Chart.Name) -}}
{{- end -}}
{{- range $peer, $url := .Values.upstreams -}}
{{- if not ($url | default (get $upstreamDefaults $peer)) -}}
{{- $messages = append $messages (printf "%s: upstreams.%s is empty and %q is not a known peer: set its URL." $.Chart.Name $peer $peer) -}}
{{- end -}}
{{- end -}}
{{- if and (.Values.storage).enabled .Values.persistence.enabled (not .Values.persistence.existingClaim) (gt (int .Values.replicaCount) 1) (has "ReadWriteOnce" .Values.persistence.accessModes) -}}
{{- $messages = append $messages (printf "%s: replicaCount is %d but the storage claim is ReadWriteOnce: use a ReadWriteMany claim (persistence.accessModes or persistence.existingClaim) or one replica." .Chart.Name (int .Values.replicaCount)) -}}
{{- end -}}
{{- if $messages -}}
{{- printf "\n\nVALUES VALIDATION:\n%s" (join "\n" $messages) | fail -}}
{{- end -}}
{{- end -}}
