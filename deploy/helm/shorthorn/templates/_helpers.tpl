{{/* Labels every object carries. */}}
{{- define "shorthorn.labels" -}}
app.kubernetes.io/name: shorthorn
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{/* The shorthorn image. */}}
{{- define "shorthorn.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end -}}

{{/* etcd client URLs for `shorthorn up --etcd`. */}}
{{- define "shorthorn.etcd" -}}
{{- if .Values.etcd.enabled -}}
http://shorthorn-etcd-0.shorthorn-etcd.{{ .Values.namespace }}.svc:2379
{{- else -}}
{{- required "etcd.endpoints is required when etcd.enabled is false" .Values.etcd.endpoints -}}
{{- end -}}
{{- end -}}

{{/* The manager API's URL inside the cluster. */}}
{{- define "shorthorn.apiUrl" -}}
http://shorthorn-api.{{ .Values.namespace }}.svc:{{ .Values.node.apiPort }}
{{- end -}}
