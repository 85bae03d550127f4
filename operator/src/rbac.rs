//! Every Kubernetes API call the operator makes, as data: the Helm chart's RBAC is checked
//! against this list (tests/tests/chart.rs), and docs/operator-rbac.md explains each line.
//! When the operator starts calling something new, this list changes in the same commit.

/// Where a permission must be granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Across the cluster (a ClusterRole): fleets may live in any namespace.
    Cluster,
    /// Only in the operator's own namespace (a Role): the leader-election Lease.
    OwnNamespace,
}

/// The verbs the operator uses on one resource.
#[derive(Debug, Clone, Copy)]
pub struct ApiCall {
    pub group: &'static str,
    pub resource: &'static str,
    pub verbs: &'static [&'static str],
    pub scope: Scope,
}

const fn cluster(
    group: &'static str,
    resource: &'static str,
    verbs: &'static [&'static str],
) -> ApiCall {
    ApiCall {
        group,
        resource,
        verbs,
        scope: Scope::Cluster,
    }
}

/// The complete list.
pub const API_CALLS: &[ApiCall] = &[
    cluster("wsfleet.io", "websocketfleets", &["list", "watch"]),
    cluster("wsfleet.io", "websocketfleets/status", &["patch"]),
    cluster("wsfleet.io", "websocketfleets/finalizers", &["update"]),
    cluster("", "pods", &["list", "watch", "create", "patch", "delete"]),
    cluster("", "services", &["list", "watch", "create", "patch"]),
    cluster(
        "",
        "configmaps",
        &["list", "watch", "create", "patch", "delete"],
    ),
    cluster("", "secrets", &["get", "create", "patch"]),
    cluster(
        "policy",
        "poddisruptionbudgets",
        &["list", "watch", "create", "patch"],
    ),
    cluster("events.k8s.io", "events", &["create", "patch"]),
    ApiCall {
        group: "coordination.k8s.io",
        resource: "leases",
        verbs: &["get", "create", "update"],
        scope: Scope::OwnNamespace,
    },
];
