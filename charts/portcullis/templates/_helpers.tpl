{{- define "portcullis.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "portcullis.fullname" -}}
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

{{- define "portcullis.labels" -}}
{{ include "portcullis.selector" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "portcullis.selector" -}}
app.kubernetes.io/name: {{ include "portcullis.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "portcullis.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "portcullis.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "portcullis.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{/* "true" when the images live in S3: a Deployment, any number of replicas. */}}
{{- define "portcullis.s3" -}}
{{- if and .Values.config.storage .Values.config.storage.s3 -}}true{{- end -}}
{{- end -}}

{{/* The most replicas the release may run. */}}
{{- define "portcullis.maxReplicas" -}}
{{- if .Values.autoscaling.enabled -}}{{ .Values.autoscaling.maxReplicas }}{{- else -}}{{ .Values.replicaCount }}{{- end -}}
{{- end -}}

{{/*
Seconds in a Go duration made of h, m and s parts ("30s", "1m30s", "2h");
smaller units count as 0.
*/}}
{{- define "portcullis.seconds" -}}
{{- $total := 0 -}}
{{- range $part := regexFindAll "[0-9.]+(h|ms|us|µs|ns|m|s)" (toString .) -1 -}}
{{- $n := regexFind "^[0-9.]+" $part | float64 -}}
{{- $unit := trimPrefix (regexFind "^[0-9.]+" $part) $part -}}
{{- if eq $unit "h" -}}{{- $total = addf $total (mulf $n 3600) -}}
{{- else if eq $unit "m" -}}{{- $total = addf $total (mulf $n 60) -}}
{{- else if eq $unit "s" -}}{{- $total = addf $total $n -}}
{{- end -}}
{{- end -}}
{{- ceil $total | int -}}
{{- end -}}

{{- define "portcullis.shutdownGrace" -}}
{{- $http := default dict .Values.config.http -}}
{{- include "portcullis.seconds" (default "30s" $http.shutdownGrace) -}}
{{- end -}}

{{/* Seconds a pod may spend stopping: the preStop sleep and the shutdown grace. */}}
{{- define "portcullis.stopping" -}}
{{- add (include "portcullis.shutdownGrace" . | int) (.Values.preStopSleepSeconds | int) -}}
{{- end -}}

{{- define "portcullis.terminationGrace" -}}
{{- $stopping := include "portcullis.stopping" . | int -}}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds -}}
{{- add $stopping 15 -}}
{{- else -}}
{{- .Values.terminationGracePeriodSeconds -}}
{{- end -}}
{{- end -}}

{{- define "portcullis.secretsDir" -}}/etc/portcullis/secrets{{- end -}}

{{/* The name of a credential group's Secret, or "" when it has none. */}}
{{- define "portcullis.secretName" -}}
{{- $root := index . 0 -}}
{{- $group := index . 1 -}}
{{- $v := index $root.Values.secrets $group -}}
{{- if $v.existingSecret -}}
{{- $v.existingSecret -}}
{{- else if eq "true" (include "portcullis.secretMade" (list $root $group)) -}}
{{- printf "%s-%s" (include "portcullis.fullname" $root) $group -}}
{{- end -}}
{{- end -}}

{{/* "true" when the chart makes a credential group's Secret from values. */}}
{{- define "portcullis.secretMade" -}}
{{- $root := index . 0 -}}
{{- $group := index . 1 -}}
{{- $v := index $root.Values.secrets $group -}}
{{- if not $v.existingSecret -}}
{{- if and (eq $group "s3") (or $v.accessKey $v.secretKey) -}}true
{{- else if and (has $group (list "upload" "htpasswd")) $v.value -}}true
{{- else if and (has $group (list "token" "trust" "webhooks")) $v.files -}}true
{{- else if and (eq $group "users") $v.passwords -}}true
{{- else if and (eq $group "remotes") $v.credentials -}}true
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The data of a chart-made Secret, as a YAML map of key to plain value. */}}
{{- define "portcullis.secretData" -}}
{{- $root := index . 0 -}}
{{- $group := index . 1 -}}
{{- $v := index $root.Values.secrets $group -}}
{{- if eq $group "s3" -}}
{{- toYaml (dict "accessKey" $v.accessKey "secretKey" $v.secretKey) -}}
{{- else if has $group (list "upload" "htpasswd") -}}
{{- toYaml (dict $v.key $v.value) -}}
{{- else if has $group (list "token" "trust" "webhooks") -}}
{{- toYaml $v.files -}}
{{- else if eq $group "users" -}}
{{- toYaml $v.passwords -}}
{{- else if eq $group "remotes" -}}
{{- toYaml $v.credentials -}}
{{- end -}}
{{- end -}}

{{- define "portcullis.secretGroups" -}}s3 upload token users htpasswd trust remotes webhooks{{- end -}}

{{/* The names of the remotes whose credentials secrets.remotes holds. */}}
{{- define "portcullis.remoteCredentials" -}}
{{- $names := list -}}
{{- range .Values.secrets.remotes.names -}}{{- $names = append $names . -}}{{- end -}}
{{- range $k, $_ := .Values.secrets.remotes.credentials -}}
{{- if hasSuffix "-username" $k -}}{{- $names = append $names (trimSuffix "-username" $k) -}}{{- end -}}
{{- end -}}
{{- toJson (uniq $names) -}}
{{- end -}}

{{/*
The configuration file: the user's config with the pod's address and data
directory, the TLS files, and the paths of the mounted credentials.
*/}}
{{- define "portcullis.config" -}}
{{- $cfg := deepCopy .Values.config -}}
{{- $dir := include "portcullis.secretsDir" . -}}
{{- $http := default dict (get $cfg "http") -}}
{{- $_ := set $http "addr" (printf "0.0.0.0:%v" .Values.service.port) -}}
{{- if .Values.tls.secretName -}}
{{- $_ := set $http "tls" (dict "certFile" "/etc/portcullis/tls/tls.crt" "keyFile" "/etc/portcullis/tls/tls.key") -}}
{{- end -}}
{{- if include "portcullis.secretName" (list . "upload") -}}
{{- $_ := set $http "secretFile" (printf "%s/upload/%s" $dir .Values.secrets.upload.key) -}}
{{- end -}}
{{- $_ := set $cfg "http" $http -}}
{{- $_ := set $cfg "dataDir" "/var/lib/portcullis" -}}
{{- if and (include "portcullis.s3" .) (include "portcullis.secretName" (list . "s3")) -}}
{{- $s3 := get (get $cfg "storage") "s3" -}}
{{- $_ := set $s3 "accessKeyFile" (printf "%s/s3/accessKey" $dir) -}}
{{- $_ := set $s3 "secretKeyFile" (printf "%s/s3/secretKey" $dir) -}}
{{- end -}}
{{- $auth := default dict (get $cfg "auth") -}}
{{- if include "portcullis.secretName" (list . "token") -}}
{{- $token := default dict (get $auth "token") -}}
{{- $_ := set $token "signingKeyFile" (printf "%s/token/%s" $dir .Values.secrets.token.signingKey) -}}
{{- $files := list -}}
{{- range .Values.secrets.token.verificationKeys -}}{{- $files = append $files (printf "%s/token/%s" $dir .) -}}{{- end -}}
{{- $_ := set $token "verificationKeyFiles" $files -}}
{{- $_ := set $auth "token" $token -}}
{{- end -}}
{{- if include "portcullis.secretName" (list . "users") -}}
{{- $users := list -}}
{{- range (default list (get $auth "users")) -}}
{{- $u := deepCopy . -}}
{{- if not (or $u.passwordHash $u.passwordFile) -}}
{{- $_ := set $u "passwordFile" (printf "%s/users/%s" $dir $u.name) -}}
{{- end -}}
{{- $users = append $users $u -}}
{{- end -}}
{{- $_ := set $auth "users" $users -}}
{{- end -}}
{{- if include "portcullis.secretName" (list . "htpasswd") -}}
{{- $_ := set $auth "htpasswdFile" (printf "%s/htpasswd/%s" $dir .Values.secrets.htpasswd.key) -}}
{{- end -}}
{{- if $auth -}}{{- $_ := set $cfg "auth" $auth -}}{{- end -}}
{{- if include "portcullis.secretName" (list . "remotes") -}}
{{- $names := include "portcullis.remoteCredentials" . | fromJsonArray -}}
{{- $remotes := list -}}
{{- range (default list (get $cfg "remotes")) -}}
{{- $r := deepCopy . -}}
{{- if and (has $r.name $names) (not $r.usernameFile) -}}
{{- $_ := set $r "usernameFile" (printf "%s/remotes/%s-username" $dir $r.name) -}}
{{- $_ := set $r "passwordFile" (printf "%s/remotes/%s-password" $dir $r.name) -}}
{{- end -}}
{{- $remotes = append $remotes $r -}}
{{- end -}}
{{- $_ := set $cfg "remotes" $remotes -}}
{{- end -}}
{{- toYaml $cfg -}}
{{- end -}}

{{/* Refusals: settings that cannot work, each with what to do instead. */}}
{{- define "portcullis.validate" -}}
{{- $max := include "portcullis.maxReplicas" . | int -}}
{{- if not (include "portcullis.s3" .) -}}
{{- if gt $max 1 -}}
{{- fail (printf "replicaCount=%d (or autoscaling) with filesystem storage: each replica would be a registry of its own behind one Service. Run 1 replica, or put the images in S3 (config.storage.s3) to run several." $max) -}}
{{- end -}}
{{- if .Values.autoscaling.enabled -}}
{{- fail "autoscaling.enabled needs S3 storage (config.storage.s3): on the filesystem the chart runs one replica." -}}
{{- end -}}
{{- end -}}
{{- if and (gt $max 1) (not (include "portcullis.secretName" (list . "upload"))) (not (and .Values.config.http .Values.config.http.secretFile)) -}}
{{- fail (printf "%d replicas without a shared upload secret: an upload started on one replica would fail on the others. Set secrets.upload.value or secrets.upload.existingSecret." $max) -}}
{{- end -}}
{{- $stopping := include "portcullis.stopping" . | int -}}
{{- if le (include "portcullis.terminationGrace" . | int) $stopping -}}
{{- fail (printf "terminationGracePeriodSeconds=%v is not above preStopSleepSeconds plus config.http.shutdownGrace (%ds): the kubelet would kill uploads the registry is still finishing." .Values.terminationGracePeriodSeconds $stopping) -}}
{{- end -}}
{{- $auth := default dict .Values.config.auth -}}
{{- if and $auth.enabled (not (and .Values.config.http .Values.config.http.host)) (not (and $auth.token $auth.token.realm)) -}}
{{- fail "config.auth.enabled needs config.http.host (https://registry.example.com) or config.auth.token.realm: clients are sent to the token endpoint's public URL, which the pod cannot know." -}}
{{- end -}}
{{- if .Values.config.dataDir -}}
{{- fail "config.dataDir is set by the chart (/var/lib/portcullis): leave it out." -}}
{{- end -}}
{{- if and (include "portcullis.secretName" (list . "token")) (not .Values.secrets.token.signingKey) -}}
{{- fail "secrets.token.signingKey: name the file in the Secret that signs tokens." -}}
{{- end -}}
{{- end -}}

{{/* The port of config.http.metricsAddr, "" when /metrics is on the registry port. */}}
{{- define "portcullis.metricsPort" -}}
{{- $http := default dict .Values.config.http -}}
{{- with $http.metricsAddr -}}{{ splitList ":" . | last }}{{- end -}}
{{- end }}
