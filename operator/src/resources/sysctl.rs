//! Kernel tuning for many concurrent sockets, in the three modes of `spec.sysctls.mode`, and the
//! report of what was applied and what was skipped (and why) that goes into the fleet status.
//!
//! What the kubelet allows decides the `SafeOnly` mode: `net.ipv4.ip_local_port_range` is a
//! safe sysctl on every supported version, `net.ipv4.tcp_rmem`/`tcp_wmem` only from 1.32;
//! `net.core.somaxconn` and `net.ipv4.tcp_tw_reuse` are network-namespaced but "unsafe" (they
//! need the kubelet's `--allowed-unsafe-sysctls`); `fs.file-max` is node-wide and can only be set
//! from a privileged container.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, ResourceRequirements, SecurityContext, Sysctl};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::crd::{SkippedSysctl, SysctlMode, SysctlReport, SysctlSettings};

/// The Kubernetes version of the API server, as far as sysctl safety needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct KubeVersion {
    pub major: u32,
    pub minor: u32,
}

impl KubeVersion {
    /// The oldest version the operator supports; assumed when the server does not say.
    pub const OLDEST: KubeVersion = KubeVersion {
        major: 1,
        minor: 30,
    };

    /// Parses the `major`/`minor` strings of `/version` (minor may carry a `+` as on EKS/GKE).
    pub fn parse(major: &str, minor: &str) -> Option<KubeVersion> {
        let digits = |s: &str| -> Option<u32> {
            let d: String = s.chars().take_while(char::is_ascii_digit).collect();
            d.parse().ok()
        };
        Some(KubeVersion {
            major: digits(major)?,
            minor: digits(minor)?,
        })
    }

    fn at_least(self, major: u32, minor: u32) -> bool {
        self >= KubeVersion { major, minor }
    }
}

impl std::fmt::Display for KubeVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// How the pod gets its tuning.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SysctlPlan {
    /// Privileged init container running `sysctl -w` (InitContainer mode).
    pub init_container: Option<Container>,
    /// Pod `securityContext.sysctls` (SafeOnly mode).
    pub pod_sysctls: Vec<Sysctl>,
    /// What was applied and skipped, for the fleet status.
    pub report: SysctlReport,
}

/// Where the kubelet stands on one key.
enum Kind {
    /// Not network-namespaced: changes the whole machine.
    NodeWide,
    /// Namespaced but not on the kubelet's safe list.
    Unsafe,
    /// On the kubelet's safe list from this minor version of 1.x.
    SafeFrom(u32),
}

fn kind(key: &str) -> Kind {
    match key {
        "fs.file-max" => Kind::NodeWide,
        "net.ipv4.ip_local_port_range" => Kind::SafeFrom(0),
        "net.ipv4.tcp_rmem" | "net.ipv4.tcp_wmem" => Kind::SafeFrom(32),
        _ => Kind::Unsafe,
    }
}

/// Every configured key with its value, in a stable order.
pub fn configured(settings: &SysctlSettings) -> Vec<(&'static str, String)> {
    let v = &settings.values;
    vec![
        ("fs.file-max", v.file_max.to_string()),
        ("net.core.somaxconn", v.somaxconn.to_string()),
        (
            "net.ipv4.ip_local_port_range",
            v.ip_local_port_range.clone(),
        ),
        ("net.ipv4.tcp_tw_reuse", v.tcp_tw_reuse.to_string()),
        ("net.ipv4.tcp_rmem", v.tcp_rmem.clone()),
        ("net.ipv4.tcp_wmem", v.tcp_wmem.clone()),
    ]
}

/// The tuning for `settings` on a cluster of version `server`.
pub fn plan(settings: &SysctlSettings, server: KubeVersion) -> SysctlPlan {
    let values = configured(settings);
    let mut report = SysctlReport {
        mode: settings.mode,
        ..SysctlReport::default()
    };
    match settings.mode {
        SysctlMode::Disabled => {
            report.skipped = values
                .iter()
                .map(|(key, _)| skipped(key, "sysctls.mode is Disabled".into()))
                .collect();
            SysctlPlan {
                report,
                ..SysctlPlan::default()
            }
        }
        SysctlMode::InitContainer => {
            report.applied = values.iter().map(|(key, _)| key.to_string()).collect();
            SysctlPlan {
                init_container: Some(init_container(&settings.image, &values)),
                pod_sysctls: Vec::new(),
                report,
            }
        }
        SysctlMode::SafeOnly => {
            let mut pod_sysctls = Vec::new();
            for (key, value) in values {
                match safe_only_verdict(key, server) {
                    None => {
                        report.applied.push(key.to_string());
                        pod_sysctls.push(Sysctl {
                            name: key.to_string(),
                            value,
                        });
                    }
                    Some(reason) => report.skipped.push(skipped(key, reason)),
                }
            }
            SysctlPlan {
                init_container: None,
                pod_sysctls,
                report,
            }
        }
    }
}

/// Why `key` cannot go into `securityContext.sysctls` on `server`, or `None` when it can.
fn safe_only_verdict(key: &str, server: KubeVersion) -> Option<String> {
    match kind(key) {
        Kind::NodeWide => Some(
            "node-wide (not namespaced): only a privileged init container can set it; use mode InitContainer"
                .into(),
        ),
        Kind::Unsafe => Some(
            "namespaced but not kubelet-safe: needs the kubelet's --allowed-unsafe-sysctls; use mode InitContainer"
                .into(),
        ),
        Kind::SafeFrom(minor) if !server.at_least(1, minor) => Some(format!(
            "kubelet-safe only from Kubernetes 1.{minor}; the cluster is {server}"
        )),
        Kind::SafeFrom(_) => None,
    }
}

fn skipped(key: &str, reason: String) -> SkippedSysctl {
    SkippedSysctl {
        name: key.to_string(),
        reason,
    }
}

/// A privileged init container that writes every key. Arguments are passed without a shell, so
/// values cannot inject commands.
fn init_container(image: &str, values: &[(&'static str, String)]) -> Container {
    let mut command = vec!["sysctl".to_string(), "-w".to_string()];
    command.extend(values.iter().map(|(key, value)| format!("{key}={value}")));
    Container {
        name: "sysctl".into(),
        image: Some(image.to_string()),
        command: Some(command),
        security_context: Some(SecurityContext {
            privileged: Some(true),
            run_as_user: Some(0),
            run_as_non_root: Some(false),
            ..SecurityContext::default()
        }),
        // Small but explicit, so namespaces whose ResourceQuota demands limits admit the pod.
        resources: Some(ResourceRequirements {
            requests: Some(quantities("10m", "16Mi")),
            limits: Some(quantities("100m", "16Mi")),
            ..ResourceRequirements::default()
        }),
        ..Container::default()
    }
}

fn quantities(cpu: &str, memory: &str) -> BTreeMap<String, Quantity> {
    BTreeMap::from([
        ("cpu".to_string(), Quantity(cpu.to_string())),
        ("memory".to_string(), Quantity(memory.to_string())),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(mode: SysctlMode) -> SysctlSettings {
        SysctlSettings {
            mode,
            ..SysctlSettings::default()
        }
    }

    const V1_31: KubeVersion = KubeVersion {
        major: 1,
        minor: 31,
    };
    const V1_32: KubeVersion = KubeVersion {
        major: 1,
        minor: 32,
    };

    fn skipped_names(plan: &SysctlPlan) -> Vec<&str> {
        plan.report
            .skipped
            .iter()
            .map(|s| s.name.as_str())
            .collect()
    }

    #[test]
    fn init_container_sets_every_key_privileged() {
        let plan = plan(&settings(SysctlMode::InitContainer), V1_31);
        let init = plan.init_container.expect("init container");
        let command = init.command.expect("command");
        assert_eq!(&command[..2], ["sysctl", "-w"]);
        for arg in [
            "fs.file-max=2097152",
            "net.core.somaxconn=32768",
            "net.ipv4.ip_local_port_range=1024 65535",
            "net.ipv4.tcp_tw_reuse=1",
            "net.ipv4.tcp_rmem=4096 16384 4194304",
            "net.ipv4.tcp_wmem=4096 16384 4194304",
        ] {
            assert!(
                command.iter().any(|c| c == arg),
                "missing {arg} in {command:?}"
            );
        }
        assert_eq!(init.security_context.and_then(|s| s.privileged), Some(true));
        let limits = init.resources.and_then(|r| r.limits).expect("limits");
        assert!(limits.contains_key("cpu") && limits.contains_key("memory"));
        assert!(plan.pod_sysctls.is_empty());
        assert_eq!(plan.report.applied.len(), 6);
        assert!(plan.report.skipped.is_empty());
    }

    #[test]
    fn safe_only_before_1_32_keeps_only_the_port_range() {
        let plan = plan(&settings(SysctlMode::SafeOnly), V1_31);
        assert!(plan.init_container.is_none());
        let names: Vec<_> = plan.pod_sysctls.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["net.ipv4.ip_local_port_range"]);
        assert_eq!(plan.pod_sysctls[0].value, "1024 65535");
        let reasons = &plan.report.skipped;
        let reason = |key: &str| {
            reasons
                .iter()
                .find(|s| s.name == key)
                .map(|s| s.reason.clone())
                .unwrap_or_default()
        };
        assert!(reason("fs.file-max").contains("node-wide"));
        assert!(reason("net.core.somaxconn").contains("allowed-unsafe-sysctls"));
        assert!(reason("net.ipv4.tcp_tw_reuse").contains("allowed-unsafe-sysctls"));
        assert!(reason("net.ipv4.tcp_rmem").contains("1.32; the cluster is 1.31"));
    }

    #[test]
    fn safe_only_from_1_32_adds_socket_buffers() {
        let plan = plan(&settings(SysctlMode::SafeOnly), V1_32);
        let names: Vec<_> = plan.pod_sysctls.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "net.ipv4.ip_local_port_range",
                "net.ipv4.tcp_rmem",
                "net.ipv4.tcp_wmem"
            ]
        );
        assert_eq!(
            skipped_names(&plan),
            ["fs.file-max", "net.core.somaxconn", "net.ipv4.tcp_tw_reuse"]
        );
    }

    #[test]
    fn disabled_sets_nothing_and_says_so() {
        let plan = plan(&settings(SysctlMode::Disabled), V1_32);
        assert!(plan.init_container.is_none());
        assert!(plan.pod_sysctls.is_empty());
        assert_eq!(plan.report.skipped.len(), 6);
        assert!(plan.report.applied.is_empty());
    }

    #[test]
    fn versions_parse_like_managed_clusters_report_them() {
        assert_eq!(KubeVersion::parse("1", "32+"), Some(V1_32));
        assert_eq!(KubeVersion::parse("1", "31"), Some(V1_31));
        assert_eq!(KubeVersion::parse("", "31"), None);
    }
}
