//! Kubernetes objects as the agentbox controller and API server write them, for the emulator.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub const SANDBOX_ID: &str = "agentbox.navix.sh/sandbox-id";
pub const PHASE: &str = "agentbox.navix.sh/sandbox-phase";
pub const LAST_ACTIVE: &str = "agentbox.navix.sh/last-active";
pub const ARMED: &str = "agentbox.navix.sh/sandbox-armed";

/// A sandbox Pod under construction.
#[derive(Debug, Clone)]
pub struct PodFixture {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub ip: Option<String>,
}

pub fn pod(namespace: &str, name: &str) -> PodFixture {
    PodFixture {
        namespace: namespace.into(),
        name: name.into(),
        labels: BTreeMap::new(),
        annotations: BTreeMap::new(),
        ip: None,
    }
}

impl PodFixture {
    pub fn sandbox(mut self, id: &str) -> Self {
        self.labels.insert(SANDBOX_ID.into(), id.into());
        self
    }

    pub fn phase(mut self, phase: &str) -> Self {
        self.labels.insert(PHASE.into(), phase.into());
        self
    }

    pub fn ip(mut self, ip: &str) -> Self {
        self.ip = Some(ip.into());
        self
    }

    pub fn no_ip(mut self) -> Self {
        self.ip = None;
        self
    }

    pub fn annotation(mut self, k: &str, v: &str) -> Self {
        self.annotations.insert(k.into(), v.into());
        self
    }

    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.labels.insert(k.into(), v.into());
        self
    }

    pub fn unlabel(mut self, k: &str) -> Self {
        self.labels.remove(k);
        self
    }

    /// A realistic Pod body: spec, status and managed fields that routing must ignore.
    pub fn json(&self) -> Value {
        let mut status = json!({
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [{"name": "sandbox", "ready": true, "restartCount": 0,
                                   "image": "sandbox:latest", "imageID": "", "started": true}],
        });
        if let Some(ip) = &self.ip {
            status["podIP"] = json!(ip);
            status["podIPs"] = json!([{"ip": ip}]);
        }
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "namespace": self.namespace,
                "name": self.name,
                "labels": self.labels,
                "annotations": self.annotations,
                "managedFields": [{"manager": "agentbox-controller", "operation": "Update",
                                   "apiVersion": "v1", "fieldsType": "FieldsV1",
                                   "fieldsV1": {"f:metadata": {"f:labels": {}}}}],
            },
            "spec": {
                "containers": [{"name": "sandbox", "image": "sandbox:latest",
                                "ports": [{"containerPort": 8080}],
                                "env": [{"name": "MODE", "value": "sandbox"}]}],
                "restartPolicy": "Never",
            },
            "status": status,
        })
    }
}

/// An API-key Secret as the agentbox API server writes it.
pub fn key_secret(
    secret_namespace: &str,
    name: &str,
    key: &str,
    tenant: &str,
    expires_at: Option<&str>,
) -> Value {
    let hash = sha256_hex(key);
    let mut data = BTreeMap::from([
        ("token".to_string(), ByteString(hash.clone().into_bytes())),
        (
            "namespace".to_string(),
            ByteString(tenant.as_bytes().to_vec()),
        ),
    ]);
    if let Some(e) = expires_at {
        data.insert("expiresAt".into(), ByteString(e.as_bytes().to_vec()));
    }
    let mut s = Secret {
        data: Some(data),
        ..Default::default()
    };
    s.metadata.namespace = Some(secret_namespace.into());
    s.metadata.name = Some(name.into());
    s.metadata.labels = Some(BTreeMap::from([
        ("agentbox.io/type".to_string(), "api-key".to_string()),
        ("agentbox.io/token-hash".to_string(), hash[..16].to_string()),
    ]));
    let mut v = serde_json::to_value(&s).expect("secret to json");
    v["apiVersion"] = json!("v1");
    v["kind"] = json!("Secret");
    v
}

/// A Secret of access-token signing keys (`--token-keys-secret`): each (id, secret) a data
/// entry.
pub fn token_keys_secret(namespace: &str, name: &str, keys: &[(&str, &[u8])]) -> Value {
    let mut s = Secret {
        data: Some(
            keys.iter()
                .map(|(id, secret)| (id.to_string(), ByteString(secret.to_vec())))
                .collect(),
        ),
        ..Default::default()
    };
    s.metadata.namespace = Some(namespace.into());
    s.metadata.name = Some(name.into());
    let mut v = serde_json::to_value(&s).expect("secret to json");
    v["apiVersion"] = json!("v1");
    v["kind"] = json!("Secret");
    v
}

/// The SHA-256 of a key in lowercase hex, as the agentbox API server stores it.
pub fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
