//! Checks of a fleet spec that the OpenAPI schema cannot make, plus Rust twins of the CRD's CEL
//! rules (an object stored before a rule existed, or a cluster without CEL, is still caught).
//!
//! A spec that fails here is reported in the `Degraded` condition and not acted on; the operator
//! never crash-loops on it.

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::crd::{
    ClientService, DrainSettings, ServiceType, SessionAffinity, SysctlValues, WebSocketFleetSpec,
};

/// Why a spec cannot be acted on, as one line per problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidSpec(pub Vec<String>);

impl std::fmt::Display for InvalidSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join("; "))
    }
}

/// Longest fleet name: `<name>-<10-char revision>-<5-char suffix>` must fit a 63-character
/// DNS label (pod hostname), as must `<name>-nodes` (the headless Service).
pub const MAX_NAME_LEN: usize = 47;

/// Checks a fleet name: the pods, Services and hostnames derived from it must be valid.
pub fn name(name: &str) -> Result<(), InvalidSpec> {
    let starts_with_letter = name.starts_with(|c: char| c.is_ascii_lowercase());
    let ends_alphanumeric = name.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit());
    let allowed = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if name.len() <= MAX_NAME_LEN && starts_with_letter && ends_alphanumeric && allowed {
        Ok(())
    } else {
        Err(InvalidSpec(vec![format!(
            "the fleet name {name:?} must be a DNS label of at most {MAX_NAME_LEN} characters \
             (lowercase letters, digits, '-'; starting with a letter)"
        )]))
    }
}

/// Every problem of `spec`, or `Ok` when the operator can act on it.
pub fn spec(spec: &WebSocketFleetSpec) -> Result<(), InvalidSpec> {
    let mut problems = Vec::new();
    check_image(spec, &mut problems);
    check_connections(spec, &mut problems);
    check_backplane(spec, &mut problems);
    check_autoscaling(spec, &mut problems);
    check_drain(spec, &mut problems);
    check_sysctls(&spec.sysctls.values, &mut problems);
    check_auth(spec, &mut problems);
    check_service(&spec.service, &mut problems);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(InvalidSpec(problems))
    }
}

fn check_image(spec: &WebSocketFleetSpec, problems: &mut Vec<String>) {
    if spec.image.trim().is_empty() {
        problems.push("spec.image must not be empty".into());
    }
    if spec.replicas < 0 {
        problems.push("spec.replicas must not be negative".into());
    }
}

fn check_connections(spec: &WebSocketFleetSpec, problems: &mut Vec<String>) {
    let c = &spec.connections;
    if c.max_per_node < 1 {
        problems.push("connections.maxPerNode must be at least 1".into());
    }
    if c.heartbeat_interval_seconds < 1 {
        problems.push("connections.heartbeatIntervalSeconds must be at least 1".into());
    }
    if c.effective_heartbeat_timeout() <= c.heartbeat_interval_seconds {
        problems.push(
            "connections.heartbeatTimeoutSeconds must be greater than heartbeatIntervalSeconds"
                .into(),
        );
    }
    if c.handshakes_per_second < 1 {
        problems.push("connections.handshakesPerSecond must be at least 1".into());
    }
}

fn check_backplane(spec: &WebSocketFleetSpec, problems: &mut Vec<String>) {
    match &spec.backplane {
        Some(b) if b.redis.url.is_some() == b.redis.secret_ref.is_some() => problems
            .push("set exactly one of backplane.redis.url or backplane.redis.secretRef".into()),
        Some(b)
            if b.redis.tls.is_some()
                && b.redis
                    .url
                    .as_ref()
                    .is_some_and(|u| !u.starts_with("rediss://")) =>
        {
            problems.push("backplane.redis.tls applies only to a rediss:// URL".into())
        }
        Some(_) => {}
        // Without a backplane each node only delivers to its own clients, so a second node
        // would silently split the fleet in two.
        None if max_nodes(spec) > 1 => problems.push(
            "a fleet of more than one node needs spec.backplane.redis (without it nodes do not \
             see each other's messages)"
                .into(),
        ),
        None => {}
    }
}

/// The most nodes the spec can ask for.
fn max_nodes(spec: &WebSocketFleetSpec) -> i32 {
    if spec.autoscaling.enabled {
        spec.autoscaling.max_replicas
    } else {
        spec.replicas
    }
}

fn check_autoscaling(spec: &WebSocketFleetSpec, problems: &mut Vec<String>) {
    let a = &spec.autoscaling;
    if a.min_replicas > a.max_replicas {
        problems.push("autoscaling.minReplicas must not exceed autoscaling.maxReplicas".into());
    }
    if a.enabled && a.min_replicas < 1 {
        problems.push("autoscaling.minReplicas must be at least 1".into());
    }
    if let Some(target) = a.target_connections_per_node {
        if target < 1 {
            problems.push("autoscaling.targetConnectionsPerNode must be at least 1".into());
        }
        if target > spec.connections.max_per_node {
            problems.push(
                "autoscaling.targetConnectionsPerNode must not exceed connections.maxPerNode"
                    .into(),
            );
        }
    }
}

fn check_drain(spec: &WebSocketFleetSpec, problems: &mut Vec<String>) {
    let d = &spec.drain;
    if d.reconnect_window_seconds < 1 {
        problems.push("drain.reconnectWindowSeconds must be at least 1".into());
    }
    if d.timeout_seconds < d.reconnect_window_seconds {
        problems.push("drain.timeoutSeconds must be at least drain.reconnectWindowSeconds".into());
    }
    match scaled_count(&d.max_unavailable, 100) {
        Ok(0) => problems.push("drain.maxUnavailable must allow at least one node".into()),
        Ok(_) => {}
        Err(e) => problems.push(format!("drain.maxUnavailable: {e}")),
    }
    if let Err(e) = scaled_count(&d.max_surge, 100) {
        problems.push(format!("drain.maxSurge: {e}"));
    }
}

/// Nodes of a fleet of `desired` that may be unavailable at once: `drain.maxUnavailable`
/// resolved against the desired size, at least one (so even a one-node fleet can be drained).
/// The operator's drains and the PodDisruptionBudget both follow it.
pub fn unavailable_budget(drain: &DrainSettings, desired: i32) -> i32 {
    scaled_count(&drain.max_unavailable, desired.max(1))
        .unwrap_or(1)
        .max(1)
}

/// Resolves an int-or-percent against `total` nodes. Percentages round up, so "10%" of a small
/// fleet still allows one node; a count is taken as is.
pub fn scaled_count(value: &IntOrString, total: i32) -> Result<i32, String> {
    match value {
        IntOrString::Int(n) if *n < 0 => Err(format!("{n} must not be negative")),
        IntOrString::Int(n) => Ok(*n),
        IntOrString::String(s) => {
            let pct = s
                .strip_suffix('%')
                .and_then(|digits| digits.parse::<i64>().ok())
                .filter(|pct| (0..=100).contains(pct))
                .ok_or_else(|| format!("{s:?} is neither a count nor a percentage like \"25%\""))?;
            let nodes = (pct * i64::from(total.max(0)) + 99) / 100;
            Ok(i32::try_from(nodes).unwrap_or(i32::MAX))
        }
    }
}

fn check_sysctls(values: &SysctlValues, problems: &mut Vec<String>) {
    match numbers(&values.ip_local_port_range, 2) {
        Some(range) if range[0] >= 1 && range[0] <= range[1] && range[1] <= 65535 => {}
        _ => problems.push(format!(
            "sysctls.values[net.ipv4.ip_local_port_range]: {:?} must be \"low high\" with 1 <= low <= high <= 65535",
            values.ip_local_port_range
        )),
    }
    for (key, value) in [
        ("net.ipv4.tcp_rmem", &values.tcp_rmem),
        ("net.ipv4.tcp_wmem", &values.tcp_wmem),
    ] {
        match numbers(value, 3) {
            Some(mem) if mem[0] <= mem[1] && mem[1] <= mem[2] => {}
            _ => problems.push(format!(
                "sysctls.values[{key}]: {value:?} must be \"min default max\" with min <= default <= max"
            )),
        }
    }
    if !(0..=2).contains(&values.tcp_tw_reuse) {
        problems.push("sysctls.values[net.ipv4.tcp_tw_reuse] must be 0, 1 or 2".into());
    }
}

/// Exactly `count` whitespace-separated unsigned numbers.
fn numbers(text: &str, count: usize) -> Option<Vec<u64>> {
    let parsed: Vec<u64> = text
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    (parsed.len() == count).then_some(parsed)
}

fn check_auth(spec: &WebSocketFleetSpec, problems: &mut Vec<String>) {
    if spec.auth.anonymous == spec.auth.jwt.is_some() {
        problems.push("set auth.jwt, or auth.anonymous: true for development (not both)".into());
    }
}

fn check_service(service: &ClientService, problems: &mut Vec<String>) {
    if service.type_ == ServiceType::ClusterIP && service.external_traffic_policy.is_some() {
        problems.push(
            "service.externalTrafficPolicy applies only to type NodePort or LoadBalancer".into(),
        );
    }
    if service.type_ != ServiceType::LoadBalancer
        && (service.load_balancer_source_ranges.is_some() || service.load_balancer_class.is_some())
    {
        problems.push(
            "service.loadBalancerSourceRanges and service.loadBalancerClass apply only to type LoadBalancer"
                .into(),
        );
    }
    if service.session_affinity != SessionAffinity::ClientIP
        && service.session_affinity_timeout_seconds.is_some()
    {
        problems.push(
            "service.sessionAffinityTimeoutSeconds applies only with sessionAffinity ClientIP"
                .into(),
        );
    }
    // The schema's pattern only keeps out what is plainly not a CIDR.
    for range in service.load_balancer_source_ranges.iter().flatten() {
        if !is_cidr(range) {
            problems.push(format!(
                "service.loadBalancerSourceRanges: {range:?} is not a CIDR like 203.0.113.0/24"
            ));
        }
    }
}

/// An IPv4 or IPv6 network in CIDR notation with a prefix length that fits the address.
fn is_cidr(text: &str) -> bool {
    let Some((address, prefix)) = text.split_once('/') else {
        return false;
    };
    let Ok(prefix) = prefix.parse::<u8>() else {
        return false;
    };
    match address.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => prefix <= 32,
        Ok(std::net::IpAddr::V6(_)) => prefix <= 128,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{
        AuthSettings, Backplane, RedisBackplane, RedisMode, RedisTls, SecretKeyRef, TrafficPolicy,
    };

    fn valid() -> WebSocketFleetSpec {
        serde_json::from_value(serde_json::json!({
            "image": "gw:1",
            "auth": {"anonymous": true}
        }))
        .expect("valid spec")
    }

    fn redis_url() -> Option<Backplane> {
        Some(Backplane {
            redis: RedisBackplane {
                url: Some("redis://r:6379".into()),
                secret_ref: None,
                mode: RedisMode::Standalone,
                key_prefix: "wsfleet".into(),
                tls: None,
            },
        })
    }

    #[test]
    fn table_of_specs() {
        type Edit = fn(&mut WebSocketFleetSpec);
        let cases: Vec<(&str, Edit, Option<&str>)> = vec![
            ("defaults", |_| {}, None),
            ("empty image", |s| s.image = " ".into(), Some("spec.image")),
            (
                "timeout not above interval",
                |s| s.connections.heartbeat_timeout_seconds = Some(30),
                Some("heartbeatTimeoutSeconds"),
            ),
            (
                "two nodes without backplane",
                |s| s.replicas = 2,
                Some("needs spec.backplane.redis"),
            ),
            (
                "two nodes with backplane",
                |s| {
                    s.replicas = 2;
                    s.backplane = redis_url();
                },
                None,
            ),
            (
                "url and secretRef",
                |s| {
                    s.backplane = redis_url();
                    if let Some(b) = s.backplane.as_mut() {
                        b.redis.secret_ref = Some(SecretKeyRef {
                            name: "r".into(),
                            key: "url".into(),
                        });
                    }
                },
                Some("exactly one of backplane.redis.url"),
            ),
            (
                "tls on a plain URL",
                |s| {
                    s.backplane = redis_url();
                    if let Some(b) = s.backplane.as_mut() {
                        b.redis.tls = Some(RedisTls::default());
                    }
                },
                Some("backplane.redis.tls applies only to a rediss:// URL"),
            ),
            (
                "tls on a TLS URL",
                |s| {
                    s.backplane = redis_url();
                    if let Some(b) = s.backplane.as_mut() {
                        b.redis.url = Some("rediss://r:6380".into());
                        b.redis.tls = Some(RedisTls::default());
                    }
                },
                None,
            ),
            (
                "min above max",
                |s| {
                    s.autoscaling.min_replicas = 5;
                    s.autoscaling.max_replicas = 3;
                },
                Some("minReplicas must not exceed"),
            ),
            (
                "target above cap",
                |s| s.autoscaling.target_connections_per_node = Some(200_000),
                Some("targetConnectionsPerNode must not exceed"),
            ),
            (
                "drain timeout below window",
                |s| s.drain.timeout_seconds = 10,
                Some("drain.timeoutSeconds"),
            ),
            (
                "bad percentage",
                |s| s.drain.max_unavailable = IntOrString::String("ten".into()),
                Some("drain.maxUnavailable"),
            ),
            (
                "zero unavailable",
                |s| s.drain.max_unavailable = IntOrString::Int(0),
                Some("at least one node"),
            ),
            (
                "inverted port range",
                |s| s.sysctls.values.ip_local_port_range = "60000 1024".into(),
                Some("ip_local_port_range"),
            ),
            (
                "tcp_rmem with two numbers",
                |s| s.sysctls.values.tcp_rmem = "4096 8192".into(),
                Some("tcp_rmem"),
            ),
            (
                "external traffic policy on ClusterIP",
                |s| s.service.external_traffic_policy = Some(TrafficPolicy::Local),
                Some("externalTrafficPolicy applies only"),
            ),
            (
                "external traffic policy on NodePort",
                |s| {
                    s.service.type_ = ServiceType::NodePort;
                    s.service.external_traffic_policy = Some(TrafficPolicy::Local);
                },
                None,
            ),
            (
                "source ranges on NodePort",
                |s| {
                    s.service.type_ = ServiceType::NodePort;
                    s.service.load_balancer_source_ranges = Some(vec!["10.0.0.0/8".into()]);
                },
                Some("apply only to type LoadBalancer"),
            ),
            (
                "load balancer class on ClusterIP",
                |s| s.service.load_balancer_class = Some("x".into()),
                Some("apply only to type LoadBalancer"),
            ),
            (
                "load balancer with good ranges",
                |s| {
                    s.service.type_ = ServiceType::LoadBalancer;
                    s.service.load_balancer_source_ranges =
                        Some(vec!["203.0.113.0/24".into(), "2001:db8::/32".into()]);
                },
                None,
            ),
            (
                "load balancer with a range that is not a CIDR",
                |s| {
                    s.service.type_ = ServiceType::LoadBalancer;
                    s.service.load_balancer_source_ranges = Some(vec!["10.0.0.300/8".into()]);
                },
                Some("is not a CIDR"),
            ),
            (
                "IPv4 prefix too long",
                |s| {
                    s.service.type_ = ServiceType::LoadBalancer;
                    s.service.load_balancer_source_ranges = Some(vec!["10.0.0.0/33".into()]);
                },
                Some("is not a CIDR"),
            ),
            (
                "affinity timeout without ClientIP",
                |s| s.service.session_affinity_timeout_seconds = Some(60),
                Some("sessionAffinityTimeoutSeconds applies only"),
            ),
            (
                "neither anonymous nor jwt",
                |s| s.auth = AuthSettings::default(),
                Some("auth.jwt"),
            ),
        ];
        for (name, edit, expected) in cases {
            let mut s = valid();
            edit(&mut s);
            match (spec(&s), expected) {
                (Ok(()), None) => {}
                (Err(e), Some(needle)) => assert!(
                    e.to_string().contains(needle),
                    "{name}: {e} does not mention {needle}"
                ),
                (got, want) => panic!("{name}: got {got:?}, want error containing {want:?}"),
            }
        }
    }

    #[test]
    fn names_must_make_valid_pod_and_service_names() {
        assert!(name("chat").is_ok());
        assert!(name("chat-eu-1").is_ok());
        assert!(name(&"a".repeat(47)).is_ok());
        for bad in ["", "Chat", "1chat", "chat-", "my.fleet", &"a".repeat(48)] {
            assert!(name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn percentages_round_up_and_counts_stay() {
        let pct = |s: &str| IntOrString::String(s.into());
        assert_eq!(scaled_count(&pct("10%"), 3), Ok(1));
        assert_eq!(scaled_count(&pct("50%"), 5), Ok(3));
        assert_eq!(scaled_count(&pct("0%"), 5), Ok(0));
        assert_eq!(scaled_count(&IntOrString::Int(2), 5), Ok(2));
        assert!(scaled_count(&pct("101%"), 5).is_err());
        assert!(scaled_count(&IntOrString::Int(-1), 5).is_err());
    }
}
