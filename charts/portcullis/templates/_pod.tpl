{{/* The pod template shared by the Deployment and the StatefulSet. */}}
{{- define "portcullis.podTemplate" -}}
{{- $dir := include "portcullis.secretsDir" . -}}
{{- $scheme := ternary "HTTPS" "HTTP" (not (empty .Values.tls.secretName)) -}}
metadata:
  labels:
    {{- include "portcullis.selector" . | nindent 4 }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    checksum/config: {{ include "portcullis.config" . | sha256sum }}
    {{- $made := list }}
    {{- range $group := splitList " " (include "portcullis.secretGroups" .) }}
    {{- if eq "true" (include "portcullis.secretMade" (list $ $group)) }}
    {{- $made = append $made (include "portcullis.secretData" (list $ $group)) }}
    {{- end }}
    {{- end }}
    checksum/secrets: {{ join "\n" $made | sha256sum }}
    {{- with .Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "portcullis.serviceAccountName" . }}
  automountServiceAccountToken: false
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  securityContext:
    {{- toYaml .Values.podSecurityContext | nindent 4 }}
  # Longer than the preStop sleep and config.http.shutdownGrace, so in-flight
  # pushes finish on rollout.
  terminationGracePeriodSeconds: {{ include "portcullis.terminationGrace" . }}
  containers:
    - name: registry
      image: {{ include "portcullis.image" . | quote }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      args: ["serve", "--config", "/etc/portcullis/config.yml"]
      securityContext:
        {{- toYaml .Values.securityContext | nindent 8 }}
      env:
        - name: OTEL_TRACES_EXPORTER
          value: none
        {{- with .Values.env }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with .Values.envFrom }}
      envFrom:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.preStopSleepSeconds }}
      lifecycle:
        preStop:
          sleep:
            seconds: {{ . }}
      {{- end }}
      ports:
        - name: registry
          containerPort: {{ .Values.service.port }}
          protocol: TCP
        {{- with include "portcullis.metricsPort" . }}
        - name: metrics
          containerPort: {{ . }}
          protocol: TCP
        {{- end }}
      startupProbe:
        httpGet:
          path: /healthz
          port: registry
          scheme: {{ $scheme }}
        {{- toYaml .Values.probes.startup | nindent 8 }}
      livenessProbe:
        httpGet:
          path: /healthz
          port: registry
          scheme: {{ $scheme }}
        {{- toYaml .Values.probes.liveness | nindent 8 }}
      readinessProbe:
        httpGet:
          path: /readyz
          port: registry
          scheme: {{ $scheme }}
        {{- toYaml .Values.probes.readiness | nindent 8 }}
      resources:
        {{- toYaml .Values.resources | nindent 8 }}
      volumeMounts:
        - name: config
          mountPath: /etc/portcullis/config.yml
          subPath: config.yml
          readOnly: true
        - name: data
          mountPath: /var/lib/portcullis
        - name: tmp
          mountPath: /tmp
        {{- if .Values.tls.secretName }}
        - name: tls
          mountPath: /etc/portcullis/tls
          readOnly: true
        {{- end }}
        {{- range $group := splitList " " (include "portcullis.secretGroups" .) }}
        {{- if include "portcullis.secretName" (list $ $group) }}
        - name: secret-{{ $group }}
          mountPath: {{ $dir }}/{{ $group }}
          readOnly: true
        {{- end }}
        {{- end }}
        {{- with .Values.extraVolumeMounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumes:
    - name: config
      configMap:
        name: {{ include "portcullis.fullname" . }}
    - name: tmp
      emptyDir:
        {{- with .Values.tmpEmptyDir.sizeLimit }}
        sizeLimit: {{ . }}
        {{- end }}
    {{- if or (include "portcullis.s3" .) (not .Values.persistence.enabled) }}
    - name: data
      emptyDir:
        {{- with .Values.dataEmptyDir.sizeLimit }}
        sizeLimit: {{ . }}
        {{- end }}
    {{- end }}
    {{- if .Values.tls.secretName }}
    - name: tls
      secret:
        secretName: {{ .Values.tls.secretName }}
        defaultMode: 0440
    {{- end }}
    {{- range $group := splitList " " (include "portcullis.secretGroups" .) }}
    {{- $name := include "portcullis.secretName" (list $ $group) }}
    {{- if $name }}
    - name: secret-{{ $group }}
      secret:
        secretName: {{ $name }}
        defaultMode: 0440
        {{- if and (eq $group "s3") $.Values.secrets.s3.existingSecret }}
        items:
          - key: {{ $.Values.secrets.s3.accessKeyKey }}
            path: accessKey
          - key: {{ $.Values.secrets.s3.secretKeyKey }}
            path: secretKey
        {{- end }}
    {{- end }}
    {{- end }}
    {{- with .Values.extraVolumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- range . }}
    - {{ toYaml (merge (deepCopy .) (dict "labelSelector" (dict "matchLabels" (include "portcullis.selector" $ | fromYaml)))) | nindent 6 | trim }}
    {{- end }}
  {{- end }}
{{- end -}}
