{{/* Names and labels. */}}
{{- define "neurofmx.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "neurofmx.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "neurofmx.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "neurofmx.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "neurofmx.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "neurofmx.image" -}}
{{- if not .Values.image.repository -}}
{{- fail "image.repository is empty: set it to the registry path pushed by `make image REGISTRY=...` (for example --set image.repository=registry.example.com/team/neurofmx)" -}}
{{- end -}}
{{- printf "%s:%s" .Values.image.repository .Values.image.tag -}}
{{- end -}}

{{- define "neurofmx.mlflowService" -}}
{{- printf "%s-mlflow" (include "neurofmx.fullname" .) -}}
{{- end -}}

{{- define "neurofmx.redisService" -}}
{{- printf "%s-redis" (include "neurofmx.fullname" .) -}}
{{- end -}}

{{/* Environment shared by the Ray head and workers: storage, tracking, auth. Secrets by reference only. */}}
{{- define "neurofmx.rayEnv" -}}
- name: AWS_ACCESS_KEY_ID
  valueFrom: {secretKeyRef: {name: {{ .Values.s3.credentialsSecret }}, key: AWS_ACCESS_KEY_ID}}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom: {secretKeyRef: {name: {{ .Values.s3.credentialsSecret }}, key: AWS_SECRET_ACCESS_KEY}}
- name: AWS_DEFAULT_REGION
  value: {{ .Values.s3.region | quote }}
{{- with .Values.s3.endpoint }}
- name: AWS_ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
{{- if has .Values.s3.addressingStyle (list "path" "virtual") }}
# fmx.storage.s3_filesystem (Ray checkpoints) follows this; "auto" keeps its own per-host choice.
- name: FMX_S3_ADDRESSING_STYLE
  value: {{ .Values.s3.addressingStyle | quote }}
{{- end }}
- name: FMX_STORAGE_PATH
  value: {{ printf "s3://%s/%s" .Values.s3.bucket .Values.s3.rayPrefix | quote }}
{{- if .Values.mlflow.enabled }}
- name: MLFLOW_TRACKING_URI
  value: {{ printf "http://%s:%d" (include "neurofmx.mlflowService" .) (int .Values.mlflow.port) | quote }}
{{- if .Values.mlflow.auth.enabled }}
- name: MLFLOW_TRACKING_USERNAME
  valueFrom: {secretKeyRef: {name: {{ .Values.mlflow.auth.secretName }}, key: admin_username}}
- name: MLFLOW_TRACKING_PASSWORD
  valueFrom: {secretKeyRef: {name: {{ .Values.mlflow.auth.secretName }}, key: admin_password}}
{{- end }}
{{- end }}
- name: FMX_DATA_DIR
  value: {{ .Values.data.mountPath | quote }}
{{- range $k, $v := .Values.ray.extraEnv }}
- name: {{ $k }}
  value: {{ $v | quote }}
{{- end }}
{{- end -}}

{{- define "neurofmx.rayVolumeMounts" -}}
- {name: dshm, mountPath: /dev/shm}
- {name: scratch, mountPath: /tmp/ray}
{{- if .Values.data.enabled }}
- {name: data, mountPath: {{ .Values.data.mountPath }}}
{{- end }}
{{- end -}}

{{- define "neurofmx.dataVolume" -}}
{{- if .Values.data.enabled }}
- name: data
  persistentVolumeClaim: {claimName: {{ include "neurofmx.fullname" . }}-data}
{{- end }}
{{- end -}}
