//! kwok Stages of a test's own: the stack's kwok reads its Stages from the
//! API server, so a test can make pods behave as a broken release would.

use kube::api::{ApiResource, DeleteParams, DynamicObject, PostParams};
use kube::core::GroupVersionKind;
use serde_json::json;

use super::unique;

/// A kwok Stage that keeps the namespace's new pods Running but never Ready;
/// it wins over the stack's own stages by its weight.
pub struct NeverReady {
    stages: kube::Api<DynamicObject>,
    name: String,
}

impl NeverReady {
    pub async fn create(namespace: &str, images: &[String]) -> NeverReady {
        let gvk = GroupVersionKind::gvk("kwok.x-k8s.io", "v1alpha1", "Stage");
        let stages: kube::Api<DynamicObject> = kube::Api::all_with(
            herd_kube::client(None).await.unwrap(),
            &ApiResource::from_gvk(&gvk),
        );
        let name = unique("never-ready-");
        let stage: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "kwok.x-k8s.io/v1alpha1",
            "kind": "Stage",
            "metadata": {"name": name},
            "spec": {
                "resourceRef": {"apiGroup": "v1", "kind": "Pod"},
                "selector": {"matchExpressions": [
                    {"key": ".metadata.namespace", "operator": "In", "values": [namespace]},
                    {"key": ".spec.containers.[0].image", "operator": "In", "values": images},
                    {"key": ".metadata.ownerReferences.[].kind", "operator": "NotIn", "values": ["Job"]},
                    {"key": ".metadata.deletionTimestamp", "operator": "DoesNotExist"},
                    {"key": ".status.phase", "operator": "In", "values": ["Pending"]},
                ]},
                "weight": 1,
                "next": {"statusTemplate": concat!(
                    "{{ $now := Now }}\n",
                    "phase: Running\n",
                    "startTime: {{ $now | Quote }}\n",
                    "conditions:\n",
                    "{{ range list \"Initialized\" \"ContainersReady\" \"Ready\" }}\n",
                    "- type: {{ . }}\n",
                    "  status: {{ if eq . \"Initialized\" }}\"True\"{{ else }}\"False\"{{ end }}\n",
                    "  lastTransitionTime: {{ $now | Quote }}\n",
                    "{{ end }}\n",
                    "containerStatuses:\n",
                    "{{ range .spec.containers }}\n",
                    "- name: {{ .name | Quote }}\n",
                    "  image: {{ .image | Quote }}\n",
                    "  restartCount: 0\n",
                    "  ready: false\n",
                    "  started: true\n",
                    "  state:\n",
                    "    running:\n",
                    "      startedAt: {{ $now | Quote }}\n",
                    "{{ end }}\n",
                )},
            },
        }))
        .unwrap();
        stages.create(&PostParams::default(), &stage).await.unwrap();
        NeverReady { stages, name }
    }

    pub async fn delete(self) {
        self.stages
            .delete(&self.name, &DeleteParams::default())
            .await
            .unwrap();
    }
}
