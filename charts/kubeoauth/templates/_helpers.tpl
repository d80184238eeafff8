{{/* The name of the release's objects: fullnameOverride, or the release name with "kubeoauth" added unless it is in it.
At most 55 characters, so that "<fullname>-metrics" (a Service: a DNS label of at most 63) fits. */}}
{{- define "kubeoauth.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 55 | trimSuffix "-" -}}
{{- else if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 55 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 55 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "kubeoauth.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: manager
{{- end -}}

{{/* The selector labels as k=v,k=v: the operator's --operator-pod-labels. */}}
{{- define "kubeoauth.operatorPodLabels" -}}
{{- $pairs := list -}}
{{- range $k, $v := (include "kubeoauth.selectorLabels" . | fromYaml) -}}
{{- $pairs = append $pairs (printf "%s=%s" $k $v) -}}
{{- end -}}
{{- join "," $pairs -}}
{{- end -}}

{{- define "kubeoauth.labels" -}}
{{ include "kubeoauth.selectorLabels" . }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "kubeoauth.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (printf "%s-manager" (include "kubeoauth.fullname" .)) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The operator's leader-election Lease: the release named kubeoauth keeps the name
0.1.0 used; any other release has its own, so that two releases (each with its
watchNamespaces) in one namespace each lead. */}}
{{- define "kubeoauth.leaseName" -}}
{{- $full := include "kubeoauth.fullname" . -}}
{{- if eq $full "kubeoauth" -}}
manager.kubeoauth.io
{{- else -}}
{{- printf "%s.manager.kubeoauth.io" $full -}}
{{- end -}}
{{- end -}}

{{/* Fails when the CRD (list . name) exists and belongs to another release: the CRDs are
cluster-wide, so one release installs and upgrades them for all, and every other
release sets crds.enabled=false. Without this Helm refuses too, but with an ownership
error that does not say what to set. lookup finds nothing under helm template (or a
GitOps tool rendering the chart), where this costs nothing. */}}
{{- define "kubeoauth.crdOwner" -}}
{{- $root := index . 0 -}}
{{- $name := index . 1 -}}
{{- $live := lookup "apiextensions.k8s.io/v1" "CustomResourceDefinition" "" $name -}}
{{- if $live -}}
{{- $annotations := $live.metadata.annotations | default dict -}}
{{- $release := index $annotations "meta.helm.sh/release-name" | default "" -}}
{{- $namespace := index $annotations "meta.helm.sh/release-namespace" | default "" -}}
{{- if and $release (or (ne $release $root.Release.Name) (ne $namespace $root.Release.Namespace)) -}}
{{- fail (printf "the CRD %s belongs to the release %s in namespace %s, which installs and upgrades the CRDs for every kubeoauth release in the cluster: install this one with --set crds.enabled=false" $name $release $namespace) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Where the hook pods (helm test, the pre-delete Job) may run: where the operator's
pods may, or on a cluster whose platform components must run on tainted nodes they
stay Pending until Helm's timeout. The operator's node affinity only: its pod
(anti-)affinity is about the operator's own pods. */}}
{{- define "kubeoauth.hookScheduling" -}}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with (.Values.affinity | default dict).nodeAffinity }}
affinity:
  nodeAffinity:
    {{- toYaml . | nindent 4 }}
{{- end }}
{{- end -}}
