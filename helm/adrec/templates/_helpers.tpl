{{/* Names, labels (Kubernetes recommended labels) and shared env blocks. */}}
{{- define "adrec.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "adrec.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "adrec.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "adrec.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "adrec.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "adrec.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: adrec
{{- end -}}

{{/* selector labels for one component: (dict "ctx" $ "component" "recommender") */}}
{{- define "adrec.selector" -}}
app.kubernetes.io/name: {{ include "adrec.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "adrec.componentLabels" -}}
{{ include "adrec.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "adrec.image" -}}
{{- printf "%s/%s:%s" .ctx.Values.image.registry .name (default .ctx.Chart.AppVersion .ctx.Values.image.tag) -}}
{{- end -}}

{{/* env shared by the Python services: ADREC_* names read by services/common/settings.py */}}
{{- define "adrec.commonEnv" -}}
- name: ADREC_LOG_LEVEL
  value: {{ .Values.common.logLevel | quote }}
- name: ADREC_LOG_JSON
  value: "true"
- name: ADREC_BIND_HOST
  value: "0.0.0.0"
- name: ADREC_KAFKA__BOOTSTRAP_SERVERS
  value: {{ .Values.kafka.bootstrapServers | quote }}
- name: ADREC_KAFKA__SECURITY_PROTOCOL
  value: {{ .Values.kafka.securityProtocol | quote }}
{{- if .Values.kafka.saslMechanism }}
- name: ADREC_KAFKA__SASL_MECHANISM
  value: {{ .Values.kafka.saslMechanism | quote }}
{{- end }}
{{- if .Values.kafka.existingSecret }}
- name: ADREC_KAFKA__SASL_USERNAME
  valueFrom: {secretKeyRef: {name: {{ .Values.kafka.existingSecret }}, key: sasl-username}}
- name: ADREC_KAFKA__SASL_PASSWORD
  valueFrom: {secretKeyRef: {name: {{ .Values.kafka.existingSecret }}, key: sasl-password}}
{{- end }}
- name: ADREC_MILVUS__URI
  value: {{ .Values.milvus.uri | quote }}
- name: ADREC_MILVUS__ALIAS
  value: {{ .Values.milvus.alias | quote }}
- name: ADREC_MILVUS__DIM
  value: {{ .Values.milvus.dim | quote }}
- name: ADREC_MILVUS__INDEX_TYPE
  value: {{ .Values.milvus.indexType | quote }}
{{- if .Values.milvus.existingSecret }}
- name: ADREC_MILVUS__TOKEN
  valueFrom: {secretKeyRef: {name: {{ .Values.milvus.existingSecret }}, key: token}}
{{- end }}
- name: ADREC_REDIS__HOST
  value: {{ .Values.redis.host | quote }}
- name: ADREC_REDIS__PORT
  value: {{ .Values.redis.port | quote }}
- name: ADREC_REDIS__DB
  value: {{ .Values.redis.db | quote }}
{{- if .Values.redis.existingSecret }}
- name: ADREC_REDIS__PASSWORD
  valueFrom: {secretKeyRef: {name: {{ .Values.redis.existingSecret }}, key: password}}
{{- end }}
- name: ADREC_FEAST__ONLINE_STORE
  value: redis
- name: ADREC_FEAST__REDIS__HOST
  value: {{ .Values.redis.host | quote }}
- name: ADREC_FEAST__REDIS__PORT
  value: {{ .Values.redis.port | quote }}
- name: ADREC_FEAST__REDIS__DB
  value: {{ .Values.redis.db | quote }}
{{- if .Values.redis.existingSecret }}
- name: ADREC_FEAST__REDIS__PASSWORD
  valueFrom: {secretKeyRef: {name: {{ .Values.redis.existingSecret }}, key: password}}
{{- end }}
{{- if .Values.feast.existingSecret }}
- name: ADREC_FEAST__REGISTRY_PATH
  valueFrom: {secretKeyRef: {name: {{ .Values.feast.existingSecret }}, key: registry-url}}
{{- else }}
- name: ADREC_FEAST__REGISTRY_PATH
  value: {{ .Values.feast.registryUrl | quote }}
{{- end }}
- name: ADREC_EMBEDDER_CLIENT__URL
  value: {{ printf "http://%s-embedder-predictor.%s.svc" (include "adrec.fullname" .) .Release.Namespace | quote }}
- name: ADREC_EMBEDDER_CLIENT__MODEL_NAME
  value: {{ .Values.embedder.modelName | quote }}
{{- end -}}

{{- define "adrec.podSecurity" -}}
securityContext:
  {{- toYaml .Values.common.podSecurityContext | nindent 2 }}
{{- end -}}

{{- define "adrec.containerSecurity" -}}
securityContext:
  {{- toYaml .Values.common.containerSecurityContext | nindent 2 }}
{{- end -}}
