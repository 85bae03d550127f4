//! The operator's own namespace: where its Lease lives and which namespace the fleets'
//! NetworkPolicies admit to the gateways' admin port.

use std::path::Path;

/// Where Kubernetes mounts the pod's service-account namespace.
pub const SERVICE_ACCOUNT_NAMESPACE: &str =
    "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// `from_env` (the chart sets `POD_NAMESPACE` from the downward API), else the namespace file
/// of the pod's service account at `file`; `None` outside a pod.
pub fn own_namespace(from_env: Option<&str>, file: &Path) -> Option<String> {
    let clean = |s: &str| {
        let s = s.trim();
        (!s.is_empty()).then(|| s.to_string())
    };
    from_env.and_then(clean).or_else(|| {
        std::fs::read_to_string(file)
            .ok()
            .as_deref()
            .and_then(clean)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_then_service_account_file() {
        let dir = std::env::temp_dir().join(format!("wsfleet-ns-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("namespace");
        std::fs::write(&file, "ops\n").expect("write");
        let missing = dir.join("missing");
        assert_eq!(
            own_namespace(Some("wsfleet-system"), &file).as_deref(),
            Some("wsfleet-system")
        );
        assert_eq!(own_namespace(None, &file).as_deref(), Some("ops"));
        assert_eq!(own_namespace(Some(" "), &file).as_deref(), Some("ops"));
        assert_eq!(own_namespace(None, &missing), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
