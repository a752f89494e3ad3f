{{- define "portcullis.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "portcullis.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "portcullis.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The configuration file: the user's config with the pod's address, data dir and TLS files. */}}
{{- define "portcullis.config" -}}
{{- $cfg := deepCopy .Values.config -}}
{{- $http := default dict (get $cfg "http") -}}
{{- $_ := set $http "addr" (printf "0.0.0.0:%v" .Values.service.port) -}}
{{- if .Values.tls.secretName -}}
{{- $_ := set $http "tls" (dict "certFile" "/etc/portcullis/tls/tls.crt" "keyFile" "/etc/portcullis/tls/tls.key") -}}
{{- end -}}
{{- $_ := set $cfg "http" $http -}}
{{- $_ := set $cfg "dataDir" "/var/lib/portcullis" -}}
{{- toYaml $cfg -}}
{{- end -}}
