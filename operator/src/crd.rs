//! The `WebSocketFleet` custom resource (`wsfleet.io/v1alpha1`): its spec, its status and the
//! schema rules the API server enforces before the operator ever sees an object.
//!
//! Every field is optional except `image`; defaults are the ones a production fleet would accept.
//! Rules the OpenAPI schema cannot express are CEL rules (`x-kubernetes-validations`), mirrored
//! in Rust by [`crate::validate`] so a fleet created before a rule existed is still caught.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, ResourceRequirements, Toleration, TopologySpreadConstraint,
};
use k8s_openapi::api::networking::v1::NetworkPolicyPeer;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
// The bounds a node accepts, so the schema refuses what a node would (see docs/crd-reference.md).
use wsfleet_api::admin::{MAX_DRAIN_DEADLINE_SECONDS, MAX_DRAIN_WINDOW_SECONDS};
use wsfleet_api::config::MAX_JWT_LEEWAY_SECS;

/// A fleet of WebSocket gateway nodes: one pod per node, owned directly by the operator.
// clippy reads the repeated `type_` of the printer columns as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "wsfleet.io",
    version = "v1alpha1",
    kind = "WebSocketFleet",
    plural = "websocketfleets",
    shortname = "wsf",
    namespaced,
    derive = "Default",
    status = "WebSocketFleetStatus",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Desired",
        type_ = "integer",
        json_path = ".status.desiredReplicas"
    ),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(
        name = "Connections",
        type_ = "integer",
        json_path = ".status.connections"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    doc = "A fleet of WebSocket gateway nodes run by the wsfleet operator.",
    validation = Rule::new(
        "self.metadata.name.size() <= 47 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')"
    ).message("the fleet name must be a DNS label of at most 47 characters (lowercase letters, digits, '-'; starting with a letter) so node names and Service names stay valid")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "!has(self.autoscaling.targetConnectionsPerNode) || self.autoscaling.targetConnectionsPerNode <= self.connections.maxPerNode"
).message("autoscaling.targetConnectionsPerNode must not exceed connections.maxPerNode"))]
#[x_kube(validation = Rule::new(
    "self.drain.timeoutSeconds >= self.drain.reconnectWindowSeconds"
).message("drain.timeoutSeconds must be at least drain.reconnectWindowSeconds"))]
pub struct WebSocketFleetSpec {
    /// Gateway container image, e.g. `ghcr.io/wsfleet/gateway:0.1.0`.
    #[schemars(length(min = 1))]
    pub image: String,

    /// Number of gateway nodes when autoscaling is off. The `scale` subresource writes this
    /// field, so an HPA or KEDA can drive it instead.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 10000))]
    pub replicas: i32,

    /// Compute resources of the gateway container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Node labels a gateway pod must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,

    /// Tolerations of the gateway pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,

    /// Affinity of the gateway pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,

    /// Topology spread of the gateway pods. When unset, pods spread across hostnames
    /// (maxSkew 1, ScheduleAnyway) so one machine's loss cuts a bounded share of connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_spread_constraints: Option<Vec<TopologySpreadConstraint>>,

    /// PriorityClass of the gateway pods. A node may hold 100,000 clients: give it a class that
    /// keeps the scheduler from preempting it for a batch job. Part of the pod template, so a
    /// change rolls the nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub priority_class_name: Option<String>,

    /// Per-node connection limits and protocol timing.
    #[serde(default)]
    pub connections: ConnectionSettings,

    /// Pub/sub backplane shared by the nodes. Without one, each node runs an in-process
    /// engine, which only makes sense for a single-node fleet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backplane: Option<Backplane>,

    /// Scaling on live connections.
    #[serde(default)]
    pub autoscaling: Autoscaling,

    /// How nodes are drained on scale-down, rollout and eviction.
    #[serde(default)]
    pub drain: DrainSettings,

    /// Kernel tuning for many concurrent sockets.
    #[serde(default)]
    pub sysctls: SysctlSettings,

    /// The client Service: its type and the load-balancer settings. Changes update the Service
    /// in place; the nodes keep running.
    #[serde(default)]
    pub service: ClientService,

    /// The NetworkPolicy that limits who reaches each gateway port.
    #[serde(default)]
    pub network_policy: NetworkPolicySettings,

    /// Scraping by the Prometheus Operator.
    #[serde(default)]
    pub monitoring: Monitoring,

    /// The publish API's token, which the operator creates in the Secret `<fleet>-publish-token`
    /// for app services, and how its rotation overlaps.
    #[serde(default)]
    pub publish_token: PublishTokenSettings,

    /// How clients authenticate their WebSocket handshake. Required: a default could only be
    /// one that its own rule refuses (neither JWT nor anonymous), which the API server rejects.
    pub auth: AuthSettings,
}

/// An empty spec with every default; not valid until `image` and `auth` are set.
impl Default for WebSocketFleetSpec {
    fn default() -> Self {
        Self {
            image: String::new(),
            replicas: default_replicas(),
            resources: None,
            node_selector: None,
            tolerations: None,
            affinity: None,
            topology_spread_constraints: None,
            priority_class_name: None,
            connections: ConnectionSettings::default(),
            backplane: None,
            autoscaling: Autoscaling::default(),
            drain: DrainSettings::default(),
            sysctls: SysctlSettings::default(),
            service: ClientService::default(),
            network_policy: NetworkPolicySettings::default(),
            monitoring: Monitoring::default(),
            publish_token: PublishTokenSettings::default(),
            auth: AuthSettings::default(),
        }
    }
}

fn default_replicas() -> i32 {
    1
}

/// Per-node connection limits and protocol timing, written into the gateway config.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "!has(self.heartbeatTimeoutSeconds) || self.heartbeatTimeoutSeconds > self.heartbeatIntervalSeconds"
).message("heartbeatTimeoutSeconds must be greater than heartbeatIntervalSeconds"))]
pub struct ConnectionSettings {
    /// Hard cap of connections on one node; handshakes beyond it are refused.
    #[serde(default = "default_max_per_node")]
    #[schemars(range(min = 1, max = 10000000))]
    pub max_per_node: i32,

    /// Seconds between server pings.
    #[serde(default = "default_heartbeat_interval")]
    #[schemars(range(min = 1, max = 3600))]
    pub heartbeat_interval_seconds: i32,

    /// Seconds without a pong before a client is dropped. Default: 2 × heartbeatIntervalSeconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 2, max = 7200))]
    pub heartbeat_timeout_seconds: Option<i32>,

    /// Largest client frame accepted, in bytes.
    #[serde(default = "default_max_message_bytes")]
    #[schemars(range(min = 128, max = 16777216))]
    pub max_message_bytes: i32,

    /// Outbound messages queued per client before the slow-consumer policy applies.
    #[serde(default = "default_send_queue_messages")]
    #[schemars(range(min = 1, max = 65536))]
    pub send_queue_messages: i32,

    /// What happens to a client whose send queue is full.
    #[serde(default)]
    pub slow_consumer_policy: SlowConsumerPolicy,

    /// Per-node budget of WebSocket handshakes per second (absorbs reconnect storms).
    #[serde(default = "default_handshakes_per_second")]
    #[schemars(range(min = 1, max = 1000000))]
    pub handshakes_per_second: i32,

    /// How a node refuses a handshake at its cap: an HTTP status, or accept then close 1013.
    #[serde(default)]
    pub refusal_mode: RefusalMode,

    /// Seconds a publish's `idempotency_key` is remembered per channel: a repeat within this
    /// window delivers nothing and is acked with the first offset.
    #[serde(default = "default_idempotency_window")]
    #[schemars(range(min = 1, max = 86400))]
    pub idempotency_window_seconds: i32,
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        Self {
            max_per_node: default_max_per_node(),
            heartbeat_interval_seconds: default_heartbeat_interval(),
            heartbeat_timeout_seconds: None,
            max_message_bytes: default_max_message_bytes(),
            send_queue_messages: default_send_queue_messages(),
            slow_consumer_policy: SlowConsumerPolicy::default(),
            handshakes_per_second: default_handshakes_per_second(),
            refusal_mode: RefusalMode::default(),
            idempotency_window_seconds: default_idempotency_window(),
        }
    }
}

impl ConnectionSettings {
    /// The heartbeat timeout in force: the explicit one, or twice the interval.
    pub fn effective_heartbeat_timeout(&self) -> i32 {
        self.heartbeat_timeout_seconds
            .unwrap_or_else(|| self.heartbeat_interval_seconds.saturating_mul(2))
    }
}

fn default_max_per_node() -> i32 {
    100_000
}
fn default_heartbeat_interval() -> i32 {
    30
}
fn default_max_message_bytes() -> i32 {
    65_536
}
fn default_send_queue_messages() -> i32 {
    256
}
fn default_handshakes_per_second() -> i32 {
    2_000
}

fn default_idempotency_window() -> i32 {
    300
}

/// What a node does with a client that cannot keep up.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SlowConsumerPolicy {
    #[default]
    Disconnect,
    DropOldest,
}

/// How a node at its connection cap refuses a new handshake.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RefusalMode {
    #[default]
    Status,
    Close1013,
}

/// The pub/sub backplane the nodes share.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Backplane {
    /// Redis (standalone or Cluster).
    pub redis: RedisBackplane,
}

/// Where the Redis backplane is and how keys are named.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.url) != has(self.secretRef)")
    .message("set exactly one of backplane.redis.url or backplane.redis.secretRef"))]
#[x_kube(validation = Rule::new("!has(self.tls) || !has(self.url) || self.url.startsWith('rediss://')")
    .message("backplane.redis.tls applies only to a rediss:// URL"))]
pub struct RedisBackplane {
    /// Redis URL (`redis://` or `rediss://`). Prefer secretRef when it carries a password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1), regex(pattern = r"^rediss?://"))]
    pub url: Option<String>,

    /// A Secret key holding the Redis URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,

    /// Standalone Redis or Redis Cluster.
    #[serde(default)]
    pub mode: RedisMode,

    /// Prefix of every key and channel the fleet uses, so fleets can share a Redis.
    #[serde(default = "default_key_prefix")]
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z0-9:._\-]+$"))]
    pub key_prefix: String,

    /// TLS for a `rediss://` URL (managed Redis with in-transit encryption). Server
    /// certificates are always verified: against `caSecretRef` when set, else the system's
    /// trusted roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<RedisTls>,
}

/// Certificates for the connection to a TLS Redis. The Secrets are mounted into the pods, not
/// copied into the config, so they never appear in a ConfigMap.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RedisTls {
    /// A Secret key holding the PEM bundle of the CAs that sign the Redis server certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeyRef>,
    /// A `kubernetes.io/tls` Secret (keys `tls.crt` and `tls.key`) with the client certificate
    /// for servers that require one (`tls-auth-clients yes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate_secret_ref: Option<SecretRef>,
}

/// A Secret in the fleet's namespace.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Secret name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

fn default_key_prefix() -> String {
    "wsfleet".to_string()
}

/// Redis deployment shape.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RedisMode {
    #[default]
    Standalone,
    Cluster,
}

/// A key of a Secret in the fleet's namespace.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Secret name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key inside the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// Scaling on live connections. When disabled, `spec.replicas` rules.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas")
    .message("autoscaling.minReplicas must not exceed autoscaling.maxReplicas"))]
pub struct Autoscaling {
    /// Whether the operator sizes the fleet from its connections.
    #[serde(default)]
    pub enabled: bool,

    /// Fewest nodes.
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 1, max = 10000))]
    pub min_replicas: i32,

    /// Most nodes.
    #[serde(default = "default_max_replicas")]
    #[schemars(range(min = 1, max = 10000))]
    pub max_replicas: i32,

    /// Connections per node the fleet aims at. Default: 80% of connections.maxPerNode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000000))]
    pub target_connections_per_node: Option<i32>,

    /// Seconds the desired size must stay lower before the fleet shrinks.
    #[serde(default = "default_scale_down_stabilization")]
    #[schemars(range(min = 0, max = 86400))]
    pub scale_down_stabilization_seconds: i32,

    /// Most nodes added in one scale-up step.
    #[serde(default = "default_max_scale_up_step")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_scale_up_step: i32,
}

impl Default for Autoscaling {
    fn default() -> Self {
        Self {
            enabled: false,
            min_replicas: default_min_replicas(),
            max_replicas: default_max_replicas(),
            target_connections_per_node: None,
            scale_down_stabilization_seconds: default_scale_down_stabilization(),
            max_scale_up_step: default_max_scale_up_step(),
        }
    }
}

fn default_min_replicas() -> i32 {
    2
}
fn default_max_replicas() -> i32 {
    10
}
fn default_scale_down_stabilization() -> i32 {
    300
}
fn default_max_scale_up_step() -> i32 {
    4
}

/// How nodes leave the fleet: clients are told to reconnect, spread over a window.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DrainSettings {
    /// Seconds over which a draining node spreads its clients' reconnects.
    #[serde(default = "default_reconnect_window")]
    #[schemars(range(min = 1, max = MAX_DRAIN_WINDOW_SECONDS))]
    pub reconnect_window_seconds: i32,

    /// Seconds after which a draining node exits whatever is left; also sets the pods'
    /// terminationGracePeriodSeconds.
    #[serde(default = "default_drain_timeout")]
    #[schemars(range(min = 1, max = MAX_DRAIN_DEADLINE_SECONDS))]
    pub timeout_seconds: i32,

    /// Nodes draining at once: a count or a percentage of the fleet.
    #[serde(default = "default_one")]
    #[schemars(schema_with = "int_or_string")]
    pub max_unavailable: IntOrString,

    /// Extra nodes created during a rollout: a count or a percentage of the fleet.
    #[serde(default = "default_one")]
    #[schemars(schema_with = "int_or_string")]
    pub max_surge: IntOrString,

    /// Seconds a new-revision node may take to become Ready during a rollout; past it the
    /// rollout stops (no more old nodes are drained) and the fleet is `Degraded`.
    #[serde(default = "default_rollout_ready_timeout")]
    #[schemars(range(min = 1, max = 86400))]
    pub rollout_ready_timeout_seconds: i32,
}

impl Default for DrainSettings {
    fn default() -> Self {
        Self {
            reconnect_window_seconds: default_reconnect_window(),
            timeout_seconds: default_drain_timeout(),
            max_unavailable: default_one(),
            max_surge: default_one(),
            rollout_ready_timeout_seconds: default_rollout_ready_timeout(),
        }
    }
}

fn default_rollout_ready_timeout() -> i32 {
    600
}

/// An int-or-string that is not nullable, so an explicit `null` (or an empty YAML value) is
/// pruned and defaulted by the API server instead of reaching the operator, where it would not
/// deserialize.
fn int_or_string(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "x-kubernetes-int-or-string": true, "nullable": false })
}

fn default_reconnect_window() -> i32 {
    60
}
fn default_drain_timeout() -> i32 {
    120
}
fn default_one() -> IntOrString {
    IntOrString::Int(1)
}

/// Kernel tuning of the nodes that run gateway pods.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SysctlSettings {
    /// How the values are applied.
    #[serde(default)]
    pub mode: SysctlMode,

    /// Image of the privileged init container (InitContainer mode); it must provide `sysctl`.
    #[serde(default = "default_sysctl_image")]
    #[schemars(length(min = 1))]
    pub image: String,

    /// The values to apply.
    #[serde(default)]
    pub values: SysctlValues,
}

impl Default for SysctlSettings {
    fn default() -> Self {
        Self {
            mode: SysctlMode::default(),
            image: default_sysctl_image(),
            values: SysctlValues::default(),
        }
    }
}

fn default_sysctl_image() -> String {
    "busybox:1.37".to_string()
}

/// How sysctls reach the node.
///
/// `InitContainer` runs a privileged init container with `sysctl -w` for every key;
/// `SafeOnly` sets only kubelet-safe, namespaced keys through the pod's securityContext
/// (works under the restricted Pod Security level); `Disabled` changes nothing.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SysctlMode {
    InitContainer,
    #[default]
    SafeOnly,
    Disabled,
}

/// Sysctl values. Defaults favour many mostly idle sockets: a wide ephemeral port range and
/// small default socket buffers that autotune upwards.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
pub struct SysctlValues {
    /// `fs.file-max`: system-wide open file limit (node-wide, InitContainer mode only).
    #[serde(rename = "fs.file-max", default = "default_file_max")]
    #[schemars(range(min = 1024))]
    pub file_max: i64,

    /// `net.core.somaxconn`: accept backlog.
    #[serde(rename = "net.core.somaxconn", default = "default_somaxconn")]
    #[schemars(range(min = 128, max = 1048576))]
    pub somaxconn: i32,

    /// `net.ipv4.ip_local_port_range`: "low high".
    #[serde(
        rename = "net.ipv4.ip_local_port_range",
        default = "default_port_range"
    )]
    #[schemars(regex(pattern = r"^[0-9]{1,5} [0-9]{1,5}$"))]
    pub ip_local_port_range: String,

    /// `net.ipv4.tcp_tw_reuse`: 0, 1 or 2.
    #[serde(rename = "net.ipv4.tcp_tw_reuse", default = "default_tw_reuse")]
    #[schemars(range(min = 0, max = 2))]
    pub tcp_tw_reuse: i32,

    /// `net.ipv4.tcp_rmem`: "min default max" receive buffer bytes.
    #[serde(rename = "net.ipv4.tcp_rmem", default = "default_tcp_mem")]
    #[schemars(regex(pattern = r"^[0-9]{1,10} [0-9]{1,10} [0-9]{1,10}$"))]
    pub tcp_rmem: String,

    /// `net.ipv4.tcp_wmem`: "min default max" send buffer bytes.
    #[serde(rename = "net.ipv4.tcp_wmem", default = "default_tcp_mem")]
    #[schemars(regex(pattern = r"^[0-9]{1,10} [0-9]{1,10} [0-9]{1,10}$"))]
    pub tcp_wmem: String,
}

impl Default for SysctlValues {
    fn default() -> Self {
        Self {
            file_max: default_file_max(),
            somaxconn: default_somaxconn(),
            ip_local_port_range: default_port_range(),
            tcp_tw_reuse: default_tw_reuse(),
            tcp_rmem: default_tcp_mem(),
            tcp_wmem: default_tcp_mem(),
        }
    }
}

fn default_file_max() -> i64 {
    2_097_152
}
fn default_somaxconn() -> i32 {
    32_768
}
fn default_port_range() -> String {
    "1024 65535".to_string()
}
fn default_tw_reuse() -> i32 {
    1
}
fn default_tcp_mem() -> String {
    "4096 16384 4194304".to_string()
}

/// The client Service, as far as a fleet's users need to shape it. Ports, selector and the
/// headless Service stay the operator's.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.type != 'ClusterIP' || !has(self.externalTrafficPolicy)")
    .message("service.externalTrafficPolicy applies only to type NodePort or LoadBalancer"))]
#[x_kube(validation = Rule::new(
    "self.type == 'LoadBalancer' || (!has(self.loadBalancerSourceRanges) && !has(self.loadBalancerClass))"
).message("service.loadBalancerSourceRanges and service.loadBalancerClass apply only to type LoadBalancer"))]
#[x_kube(validation = Rule::new(
    "self.sessionAffinity == 'ClientIP' || !has(self.sessionAffinityTimeoutSeconds)"
).message("service.sessionAffinityTimeoutSeconds applies only with sessionAffinity ClientIP"))]
pub struct ClientService {
    /// How the Service is exposed.
    #[serde(rename = "type", default)]
    pub type_: ServiceType,

    /// Annotations of the Service (e.g. a cloud load balancer's settings).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,

    /// Extra labels of the Service. The operator's own labels (`app.kubernetes.io/*` it sets,
    /// `wsfleet.io/fleet`) take precedence.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,

    /// `Local` keeps the client's source address and avoids a second hop, but sends traffic
    /// only to machines running a gateway node. NodePort and LoadBalancer only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_traffic_policy: Option<TrafficPolicy>,

    /// Client CIDRs the load balancer admits (e.g. `203.0.113.0/24`). LoadBalancer only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(inner(regex(pattern = r"^[0-9A-Fa-f:.]+/[0-9]{1,3}$")))]
    pub load_balancer_source_ranges: Option<Vec<String>>,

    /// Load-balancer implementation to use (e.g. `service.k8s.aws/nlb`). LoadBalancer only;
    /// Kubernetes does not let it change once set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub load_balancer_class: Option<String>,

    /// `ClientIP` sends a client address's connections to the same node. Reconnects after a
    /// drain must be free to land elsewhere, so the default is `None`.
    #[serde(default)]
    pub session_affinity: SessionAffinity,

    /// How long `ClientIP` affinity lasts. Default (Kubernetes'): 10800.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 86400))]
    pub session_affinity_timeout_seconds: Option<i32>,
}

/// Service type of the client Service.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    NodePort,
    LoadBalancer,
}

/// A Service's `externalTrafficPolicy`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrafficPolicy {
    Cluster,
    Local,
}

/// A Service's `sessionAffinity`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SessionAffinity {
    #[default]
    None,
    ClientIP,
}

/// Who may reach which gateway port. On by default: the admin port drains nodes and the API
/// port publishes to every client, so neither should be open to the whole cluster.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySettings {
    /// Whether the operator manages a NetworkPolicy for the fleet (deleted when turned off).
    #[serde(default = "default_true")]
    pub enabled: bool,

    /// Who may call the publish API (port `api`). Default: pods in namespaces labelled
    /// `wsfleet.io/api-access: "true"`. An empty list admits nobody.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_from: Option<Vec<NetworkPolicyPeer>>,

    /// Who else may reach the admin port (`/metrics`, health, status, drain), besides the
    /// operator's own namespace: typically the Prometheus namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics_from: Vec<NetworkPolicyPeer>,
}

impl Default for NetworkPolicySettings {
    fn default() -> Self {
        Self {
            enabled: default_true(),
            api_from: None,
            metrics_from: Vec::new(),
        }
    }
}

fn default_true() -> bool {
    true
}

/// Scraping of the gateway nodes by the Prometheus Operator.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Monitoring {
    /// A `monitoring.coreos.com/v1` PodMonitor for the fleet's nodes.
    #[serde(default)]
    pub pod_monitor: PodMonitorSettings,
}

/// The fleet's PodMonitor: scrapes `/metrics` on every node's `admin` port.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodMonitorSettings {
    /// Whether the operator manages a PodMonitor (needs the Prometheus Operator's CRDs; deleted
    /// when turned off).
    #[serde(default)]
    pub enabled: bool,

    /// Scrape interval, a Prometheus duration.
    #[serde(default = "default_scrape_interval")]
    #[schemars(
        regex(pattern = r"^(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?$"),
        length(min = 2)
    )]
    pub interval: String,

    /// Extra labels of the PodMonitor, e.g. the one your Prometheus' `podMonitorSelector` picks.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl Default for PodMonitorSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            interval: default_scrape_interval(),
            labels: BTreeMap::new(),
        }
    }
}

fn default_scrape_interval() -> String {
    "30s".to_string()
}

/// Client authentication: JWT verification, or anonymous for development.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.anonymous != has(self.jwt)")
    .message("set auth.jwt, or auth.anonymous: true for development (not both)"))]
pub struct AuthSettings {
    /// Accept clients without a token (development only).
    #[serde(default)]
    pub anonymous: bool,

    /// Verify a JWT on every handshake; the client id is its `sub`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtAuth>,
}

/// JWT verification settings.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct JwtAuth {
    /// Signature algorithm.
    #[serde(default)]
    pub algorithm: JwtAlgorithm,

    /// Secret key with the HS256 secret, the RS256/ES256 public key (PEM), or a JWKS document
    /// (`{"keys": [...]}`, each key with its `kid` and `alg`) so keys can rotate. The nodes
    /// re-read it while they run: changing the Secret's content restarts nothing and
    /// disconnects nobody.
    pub key_secret_ref: SecretKeyRef,
    /// The `iss` every token must carry. Default: not checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub issuer: Option<String>,
    /// Accepted `aud` values: a token must name one of them. Default (empty): not checked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(length(min = 1, max = 1024)))]
    pub audiences: Vec<String>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds; also how long past `exp` a live
    /// connection may stay (without a `refresh`) before it is closed with 4001.
    #[serde(default = "default_jwt_leeway")]
    #[schemars(range(min = 0, max = MAX_JWT_LEEWAY_SECS))]
    pub leeway_seconds: i32,
}

fn default_jwt_leeway() -> i32 {
    30
}

/// The publish API token (`POST /api/v1/publish|send` on port `api`). The operator creates it
/// in the Secret `<fleet>-publish-token` (key `token`) for app services to mount. Annotating
/// the fleet with `wsfleet.io/rotate-publish-token: <any new value>` rotates it: the Secret
/// gets a new `token`, and the nodes accept the previous one too for `rotationOverlapSeconds`
/// so publishers can move over without a failed request.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PublishTokenSettings {
    /// Seconds the previous token stays valid after a rotation.
    #[serde(default = "default_rotation_overlap")]
    #[schemars(range(min = 0, max = 604800))]
    pub rotation_overlap_seconds: i32,
}

impl Default for PublishTokenSettings {
    fn default() -> Self {
        Self {
            rotation_overlap_seconds: default_rotation_overlap(),
        }
    }
}

fn default_rotation_overlap() -> i32 {
    600
}

/// JWT signature algorithm.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum JwtAlgorithm {
    #[default]
    HS256,
    RS256,
    ES256,
}

/// What the operator last observed of the fleet.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WebSocketFleetStatus {
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Gateway pods that exist (any phase).
    #[serde(default)]
    pub replicas: i32,
    /// Gateway pods that are Ready.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Nodes the fleet should have now.
    #[serde(default)]
    pub desired_replicas: i32,
    /// Live connections across the fleet.
    #[serde(default)]
    pub connections: i64,
    /// Label selector of the fleet's serving pods (read by the scale subresource).
    #[serde(default)]
    pub selector: String,
    /// Revision (pod template hash) new pods are created with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// One entry per gateway pod.
    #[serde(default)]
    pub nodes: Vec<NodeStatus>,
    /// Ready, Progressing, Degraded.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Which kernel tuning was applied and which was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sysctls: Option<SysctlReport>,
    /// When the fleet size last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<Time>,
    /// The autoscaler's recent recommendations, kept so scale-down stabilization survives an
    /// operator restart.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recommendations: Vec<Recommendation>,
}

/// A size the autoscaler recommended, and the last time it did.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Recommendation {
    /// Recommended nodes.
    pub replicas: i32,
    /// Last time this size was recommended.
    pub time: Time,
}

/// One gateway node (pod) as the operator sees it.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    /// Pod name, which is also the node id.
    pub name: String,
    /// Lifecycle phase.
    pub phase: NodePhase,
    /// Live connections on the node.
    #[serde(default)]
    pub connections: i64,
    /// Revision the pod was created from.
    #[serde(default)]
    pub revision: String,
    /// Why the node's admin API did not answer, when it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreachable: Option<String>,
}

/// Lifecycle phase of a gateway node.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodePhase {
    Starting,
    Serving,
    Draining,
    Drained,
}

/// Result of the sysctl tuning for the current mode.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SysctlReport {
    /// Mode in force.
    pub mode: SysctlMode,
    /// Keys set on the pods.
    #[serde(default)]
    pub applied: Vec<String>,
    /// Keys not set, each with why.
    #[serde(default)]
    pub skipped: Vec<SkippedSysctl>,
}

/// A sysctl the operator did not set.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SkippedSysctl {
    /// Sysctl key.
    pub name: String,
    /// Why it was skipped.
    pub reason: String,
}
