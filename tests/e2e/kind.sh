#!/usr/bin/env bash
# End-to-end test of the operator on a real Kubernetes cluster (kind). Opt-in: it needs docker,
# kind and kubectl, and network access to pull base images. Run from anywhere:
#
#   tests/e2e/kind.sh
#
# KEEP_CLUSTER=1 leaves the cluster running afterwards; CLUSTER=name picks its name.
set -euo pipefail
cd "$(dirname "$0")/../.."
CLUSTER=${CLUSTER:-wsfleet-e2e}
NS=wsfleet-e2e
TIMEOUT=${TIMEOUT:-180s}

for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null || { echo "e2e needs $tool on PATH" >&2; exit 2; }
done

step() { echo; echo "== $*"; }
fail() { echo "FAIL: $*" >&2; kubectl -n "$NS" get wsf,pods,svc,cm,pdb -o wide >&2 || true; exit 1; }
cleanup() {
  if [[ "${KEEP_CLUSTER:-0}" != 1 ]]; then kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

# Polls `kubectl get ... -o jsonpath=$2` until it prints $3 (bounded by TIMEOUT seconds).
wait_for() {
  local what=$1 path=$2 want=$3 deadline=$((SECONDS + ${TIMEOUT%s}))
  until [[ "$(kubectl -n "$NS" get $what -o "jsonpath=$path" 2>/dev/null)" == "$want" ]]; do
    (( SECONDS < deadline )) || fail "$what $path never became $want"
    sleep 2
  done
}

step "cluster"
kind get clusters | grep -qx "$CLUSTER" || kind create cluster --name "$CLUSTER" --wait 120s

step "images"
docker build -f operator/Dockerfile -t wsfleet/operator:e2e .
docker build -f gateway/Dockerfile -t wsfleet/gateway:e2e .
kind load docker-image --name "$CLUSTER" wsfleet/operator:e2e wsfleet/gateway:e2e

step "CRD and operator from the Helm chart (2 replicas, leader election)"
helm upgrade --install wsfleet charts/wsfleet --namespace wsfleet-system --create-namespace \
  --set image.repository=wsfleet/operator --set image.tag=e2e --set image.pullPolicy=Never \
  --set logFormat=text --wait --timeout "$TIMEOUT"
kubectl wait --for=condition=Established crd/websocketfleets.wsfleet.io --timeout=60s

step "fleet comes up"
kubectl apply -f tests/e2e/redis.yaml
kubectl -n "$NS" wait --for=condition=Ready pod/redis --timeout="$TIMEOUT"
kubectl apply -f tests/e2e/fleet.yaml
kubectl -n "$NS" wait --for=condition=Ready wsf/e2e --timeout="$TIMEOUT"
wait_for wsf/e2e '{.status.readyReplicas}' 2
for object in svc/e2e svc/e2e-nodes pdb/e2e secret/e2e-drain-token secret/e2e-publish-token; do
  kubectl -n "$NS" get "$object" >/dev/null || fail "$object missing"
done
holder=$(kubectl -n wsfleet-system get lease wsfleet-operator -o 'jsonpath={.spec.holderIdentity}')
[[ -n "$holder" ]] || fail "no leader holds the lease"
echo "leader: $holder"

step "a deleted node is replaced"
victim=$(kubectl -n "$NS" get pods -l wsfleet.io/fleet=e2e -o 'jsonpath={.items[0].metadata.name}')
kubectl -n "$NS" delete pod "$victim" --wait=true
wait_for wsf/e2e '{.status.readyReplicas}' 2
kubectl -n "$NS" get pod "$victim" >/dev/null 2>&1 && fail "$victim still exists"

step "a spec change rolls every node to the new revision"
kubectl -n "$NS" patch wsf/e2e --type merge -p '{"spec":{"connections":{"maxPerNode":50000}}}'
deadline=$((SECONDS + ${TIMEOUT%s}))
while :; do
  revision=$(kubectl -n "$NS" get wsf/e2e -o 'jsonpath={.status.revision}')
  current=$(kubectl -n "$NS" get pods -l "wsfleet.io/fleet=e2e,wsfleet.io/revision=$revision" \
    --field-selector=status.phase=Running -o name | wc -l)
  total=$(kubectl -n "$NS" get pods -l wsfleet.io/fleet=e2e -o name | wc -l)
  [[ "$current" == 2 && "$total" == 2 ]] && break
  (( SECONDS < deadline )) || fail "rollout did not finish"
  sleep 2
done
wait_for wsf/e2e '{.status.readyReplicas}' 2

step "the scale subresource resizes the fleet"
kubectl -n "$NS" scale wsf/e2e --replicas=3
wait_for wsf/e2e '{.status.readyReplicas}' 3

step "a spec the operator cannot act on is reported, not crashed on"
kubectl -n "$NS" patch wsf/e2e --type merge -p '{"spec":{"drain":{"maxUnavailable":"lots"}}}'
wait_for wsf/e2e '{.status.conditions[?(@.type=="Degraded")].reason}' InvalidSpec
kubectl -n wsfleet-system rollout status deploy/wsfleet --timeout=30s
kubectl -n "$NS" patch wsf/e2e --type merge -p '{"spec":{"drain":{"maxUnavailable":1}}}'
wait_for wsf/e2e '{.status.conditions[?(@.type=="Degraded")].status}' False

step "deleting the fleet deletes what it owns"
kubectl -n "$NS" delete wsf/e2e --wait=true
deadline=$((SECONDS + ${TIMEOUT%s}))
until [[ -z "$(kubectl -n "$NS" get pods,svc,cm,pdb,secret -l wsfleet.io/fleet=e2e -o name)" ]]; do
  (( SECONDS < deadline )) || fail "owned objects were not garbage-collected"
  sleep 2
done

echo; echo "e2e: all checks passed"
