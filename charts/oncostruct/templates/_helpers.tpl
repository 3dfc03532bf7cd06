{{/*
Chart-scoped helpers of the oncostruct umbrella chart ("oncostruct." prefix:
Helm shares named templates across the whole chart tree).
*/}}

{{- define "oncostruct.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "oncostruct.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "oncostruct.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "oncostruct.labels" -}}
helm.sh/chart: {{ include "oncostruct.chart" . }}
app.kubernetes.io/name: {{ include "oncostruct.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: oncostruct
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/*
The four services behind the ingress, in routing order: subchart name and the
path prefix its app serves (routed as-is, never rewritten).
*/}}
{{- define "oncostruct.routes" -}}
- component: clinical
  path: /fhir
- component: imaging
  path: /dicomweb
- component: annotations
  path: /annotations/v1
- component: reconstruction
  path: /reconstruction/v1
{{- end -}}

{{/*
Object name of a subchart's Service, by the subcharts' naming rule:
fullnameOverride, else "<release>-<nameOverride or chart name>".
Usage: include "oncostruct.componentFullname" (dict "component" "clinical" "context" $)
*/}}
{{- define "oncostruct.componentFullname" -}}
{{- $values := index .context.Values .component | default dict -}}
{{- if $values.fullnameOverride -}}
{{- $values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .context.Release.Name ($values.nameOverride | default .component) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Whether a subchart is enabled ("true" or ""). */}}
{{- define "oncostruct.enabled" -}}
{{- $values := index .context.Values .component | default dict -}}
{{- if $values.enabled -}}true{{- end -}}
{{- end -}}

{{/* The services that are enabled, as a list of route dicts. */}}
{{- define "oncostruct.enabledRoutes" -}}
{{- $enabled := list -}}
{{- range (include "oncostruct.routes" . | fromYamlArray) -}}
{{- if include "oncostruct.enabled" (dict "component" .component "context" $) -}}
{{- $enabled = append $enabled . -}}
{{- end -}}
{{- end -}}
{{- toYaml $enabled -}}
{{- end -}}

{{/*
Check the values across subcharts and fail with a readable message.
Each subchart checks its own values too.
*/}}
{{- define "oncostruct.validateValues" -}}
{{- $messages := list -}}
{{- $routes := include "oncostruct.enabledRoutes" . | fromYamlArray -}}
{{- if and $routes (not .Values.global.database.existingSecret) -}}
{{- $messages = append $messages "oncostruct: global.database.existingSecret is empty. Create a Secret with the database URL (kubectl create secret generic oncostruct-database --from-literal=database-url='postgresql+asyncpg://user:password@host:5432/db') and set global.database.existingSecret to its name." -}}
{{- end -}}
{{- if and $routes (not .Values.global.auth.issuer) -}}
{{- $messages = append $messages "oncostruct: global.auth.issuer is empty: set the OIDC issuer URL whose tokens the services accept." -}}
{{- end -}}
{{- if .Values.ingress.enabled -}}
{{- if not .Values.ingress.hostname -}}
{{- $messages = append $messages "oncostruct: ingress.enabled is true but ingress.hostname is empty: set the host name the services are served at, or ingress.enabled=false." -}}
{{- end -}}
{{- if not $routes -}}
{{- $messages = append $messages "oncostruct: ingress.enabled is true but clinical, imaging, annotations and reconstruction are all disabled: nothing to route." -}}
{{- end -}}
{{- $publicHost := (urlParse (.Values.global.publicUrl | default "")).hostname -}}
{{- if and .Values.ingress.hostname .Values.global.publicUrl (ne $publicHost .Values.ingress.hostname) -}}
{{- $messages = append $messages (printf "oncostruct: global.publicUrl (%s) names host %q but ingress.hostname is %q: the services would write links to a host the ingress does not serve. Set both to the same host." .Values.global.publicUrl $publicHost .Values.ingress.hostname) -}}
{{- end -}}
{{- end -}}
{{- if and .Values.reconstruction.enabled (not .Values.triton.enabled) (not ((.Values.reconstruction.upstreams).triton)) -}}
{{- $messages = append $messages "oncostruct: reconstruction is enabled but triton is not: enable triton or set reconstruction.upstreams.triton to the host:port of an existing Triton HTTP endpoint." -}}
{{- end -}}
{{- if $messages -}}
{{- printf "\n\nVALUES VALIDATION:\n%s" (join "\n" $messages) | fail -}}
{{- end -}}
{{- end -}}
