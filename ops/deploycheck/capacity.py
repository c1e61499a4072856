"""How many pods k8s may run, and who decides: autoscalers, queue-depth
scaling, ResourceQuota and LimitRange.

  autoscalers  no Deployment has two autoscalers (an HPA and a KEDA
               ScaledObject, which makes an HPA of its own, would fight over
               its replicas), and an autoscaled Deployment sets no replicas
               (every apply would reset the count)
  queues       (ha) every nameko service of the Procfile is scaled by a
               ScaledObject on CPU and on the depth of the queues it consumes:
               its trigger's pattern matches rpc-<service> and each of its
               saga handler queues, as shared.topology names them under the
               service's rendered SAGA_QUEUE_TYPE, and none of their retry or
               dead-letter queues
  quota        (ha) the namespace's ResourceQuota admits every workload at its
               maximum scale plus one surge pod each (a rolling update), the
               operators' pods included; every container fits the LimitRange
"""

import importlib
import re
import warnings
from collections import Counter
from fractions import Fraction

from .consistency import procfile_services
from .platforms import WORKLOADS, Platform
from .runner import Failed, Skipped, fail_if

AUTOSCALED = "Deployment"
# The RabbitMQ Cluster Operator's setup init container (v2.22.3, internal/resource).
RABBITMQ_SETUP = {"cpu": Fraction(20, 1000), "memory": Fraction(64 * 2**20)}
RESOURCES = ("cpu", "memory")

UNITS = {
    "m": Fraction(1, 1000),
    "": Fraction(1),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "Ki": Fraction(2**10),
    "Mi": Fraction(2**20),
    "Gi": Fraction(2**30),
    "Ti": Fraction(2**40),
}


def quantity(value) -> Fraction:
    """A Kubernetes quantity ("250m", "2", "512Mi") as a number of units."""
    number, unit = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(value)).groups()
    return Fraction(number) * UNITS[unit]


def autoscalers(k8s: Platform) -> Counter:
    """How many HPAs and ScaledObjects target each Deployment, by name."""
    targets = Counter()
    for obj in k8s.objects:
        if obj["kind"] == "HorizontalPodAutoscaler":
            ref = obj["spec"]["scaleTargetRef"]
            if ref["kind"] == AUTOSCALED:
                targets[ref["name"]] += 1
        elif obj["kind"] == "ScaledObject":
            ref = obj["spec"]["scaleTargetRef"]
            if ref.get("kind", AUTOSCALED) == AUTOSCALED:
                targets[ref["name"]] += 1
    return targets


def one_autoscaler_per_deployment(k8s: Platform) -> None:
    """No Deployment has two autoscalers, and an autoscaled one sets no replicas."""
    problems = []
    deployments = {o["metadata"]["name"]: o for o in k8s.objects if o["kind"] == AUTOSCALED}
    for name, count in sorted(autoscalers(k8s).items()):
        if name not in deployments:
            problems.append(f"an autoscaler targets Deployment {name}, which is not rendered")
            continue
        if count > 1:
            problems.append(f"Deployment {name}: {count} autoscalers (HPA, ScaledObject) fight")
        if "replicas" in deployments[name]["spec"]:
            problems.append(f"Deployment {name}: autoscaled, but sets replicas (reset on apply)")
    fail_if(problems)


def service_queues(service: str, environ: dict[str, str]) -> tuple[list[str], list[str]]:
    """The queues the service consumes from (rpc-<service> and its saga handlers'
    queues) and those where its messages wait (retry and parking queues), named
    as shared.topology declares them under the service's environment
    (SAGA_QUEUE_TYPE)."""
    from shared import topology

    settings = topology.queue_settings(environ=environ)
    handlers = [
        handler.queues(settings)
        for handler in topology.saga_handlers()
        if handler.service == service
    ]
    consumed = [f"rpc-{service}"] + [queues.queue.name for queues in handlers]
    waiting = {q.name for queues in handlers for q in queues.all()} - set(consumed)
    waiting.add(topology.dead_letter_queue_name(service, settings))
    return consumed, sorted(waiting)


def queue_problems(service: str, trigger: dict, environ: dict[str, str]) -> list[str]:
    """What the trigger's queue pattern misses of the service's queues, or wrongly counts."""
    metadata = trigger.get("metadata", {})
    name = metadata.get("queueName", "")
    if metadata.get("useRegex") != "true":
        return [f"{service}: its rabbitmq trigger counts one queue ({name}), not a pattern"]
    # RabbitMQ matches the pattern anywhere in the name (PCRE): search, not match.
    pattern = re.compile(name)
    consumed, waiting = service_queues(service, environ)
    problems = [
        f"{service}: queue {q} does not match {name}" for q in consumed if not pattern.search(q)
    ]
    problems += [f"{service}: {name} also counts {q}" for q in waiting if pattern.search(q)]
    return problems


def services_scaled_on_their_queues(k8s: Platform) -> None:
    """Every service has a ScaledObject on CPU and on the depth of the queues it consumes."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # eventlet's deprecation notice, at import
            for service in procfile_services():
                importlib.import_module(f"services.{service}.service")
    except ImportError as missing:
        raise Skipped(f"the project is not installed in this venv ({missing})") from None
    scaled = {
        o["spec"]["scaleTargetRef"]["name"]: o for o in k8s.objects if o["kind"] == "ScaledObject"
    }
    authentications = {
        o["metadata"]["name"] for o in k8s.objects if o["kind"] == "TriggerAuthentication"
    }
    problems = []
    for service in procfile_services():
        scaler = scaled.get(service)
        if scaler is None:
            problems.append(f"{service}: no ScaledObject")
            continue
        triggers = scaler["spec"]["triggers"]
        if not any(t["type"] == "cpu" for t in triggers):
            problems.append(f"{service}: no cpu trigger")
        rabbitmq = [t for t in triggers if t["type"] == "rabbitmq"]
        if not rabbitmq:
            problems.append(f"{service}: no rabbitmq trigger")
        for trigger in rabbitmq:
            problems += queue_problems(service, trigger, k8s.processes[service].env)
            reference = trigger.get("authenticationRef", {}).get("name")
            if reference not in authentications:
                problems.append(
                    f"{service}: its trigger's TriggerAuthentication {reference} is not rendered"
                )
    fail_if(problems)


def pod_resources(pod: dict, kind: str) -> dict[str, Fraction]:
    """What a pod requests or is limited to (kind: requests|limits): its containers'
    sum, or its largest init container if that is more."""

    def total(containers):
        return {
            r: sum(
                (quantity(c.get("resources", {}).get(kind, {}).get(r, 0)) for c in containers),
                Fraction(0),
            )
            for r in RESOURCES
        }

    running, init = (
        total(pod.get("containers", [])),
        [total([c]) for c in pod.get("initContainers", [])],
    )
    return {r: max([running[r], *(i[r] for i in init)]) for r in RESOURCES}


def scaled_maximum(k8s: Platform) -> dict[str, int]:
    """The most replicas each autoscaled Deployment may have."""
    most = {}
    for obj in k8s.objects:
        if obj["kind"] == "HorizontalPodAutoscaler":
            most[obj["spec"]["scaleTargetRef"]["name"]] = obj["spec"]["maxReplicas"]
        elif obj["kind"] == "ScaledObject":
            most[obj["spec"]["scaleTargetRef"]["name"]] = obj["spec"].get("maxReplicaCount", 100)
    return most


def full_scale(k8s: Platform) -> tuple[dict[str, Fraction], list[str]]:
    """The namespace at full scale: pods, requests.*, limits.* and storage, and how it adds up."""
    usage = Counter()
    lines = []
    most = scaled_maximum(k8s)

    def add(what: str, pods: int, pod: dict[str, dict[str, Fraction]], storage=Fraction(0)):
        usage["pods"] += pods
        usage["requests.storage"] += storage
        for kind in ("requests", "limits"):
            for r in RESOURCES:
                usage[f"{kind}.{r}"] += pods * pod[kind][r]
        lines.append(f"{what}: {pods} pod(s)")

    for obj in k8s.objects:
        kind, name, spec = obj["kind"], obj["metadata"]["name"], obj.get("spec", {})
        if kind in WORKLOADS or kind == "CronJob":
            template = (
                spec["jobTemplate"]["spec"]["template"] if kind == "CronJob" else spec["template"]
            )
            pod = {k: pod_resources(template["spec"], k) for k in ("requests", "limits")}
            if kind == "Deployment":
                # One surge pod per Deployment during a rolling update.
                replicas = most.get(name, spec.get("replicas", 1)) + 1
            elif kind == "StatefulSet":
                replicas = spec.get("replicas", 1)
            else:
                replicas = spec.get("parallelism", 1)
            add(f"{kind} {name}", replicas, pod)
        elif kind == "PersistentVolumeClaim":
            usage["requests.storage"] += quantity(spec["resources"]["requests"]["storage"])
            usage["persistentvolumeclaims"] += 1
        elif kind == "RabbitmqCluster":
            resources = spec["resources"]
            pod = {
                k: {r: max(quantity(resources[k][r]), RABBITMQ_SETUP[r]) for r in RESOURCES}
                for k in ("requests", "limits")
            }
            storage = quantity(spec.get("persistence", {}).get("storage", "10Gi"))
            add(f"RabbitmqCluster {name}", spec["replicas"], pod, spec["replicas"] * storage)
            usage["persistentvolumeclaims"] += spec["replicas"]
        elif kind == "Cluster" and obj["apiVersion"].startswith("postgresql.cnpg.io/"):
            pod = {
                k: {r: quantity(spec["resources"][k][r]) for r in RESOURCES}
                for k in ("requests", "limits")
            }
            for sidecar in cnpg_sidecars(k8s, spec):
                for k in ("requests", "limits"):
                    for r in RESOURCES:
                        pod[k][r] += quantity(sidecar[k][r])
            volumes = [spec["storage"]] + ([spec["walStorage"]] if "walStorage" in spec else [])
            storage = sum((quantity(v["size"]) for v in volumes), Fraction(0))
            instances = spec["instances"]
            # Plus one pod of the operator's bootstrap or join Job (instance-sized).
            add(f"Cluster {name}", instances + 1, pod, instances * storage)
            usage["persistentvolumeclaims"] += instances * len(volumes)
    return dict(usage), lines


def cnpg_sidecars(k8s: Platform, spec: dict) -> list[dict]:
    """The resources of the Barman Cloud sidecar the plugin adds to each instance."""
    stores = {o["metadata"]["name"]: o for o in k8s.objects if o["kind"] == "ObjectStore"}
    sidecars = []
    for plugin in spec.get("plugins", []):
        store = stores.get(plugin.get("parameters", {}).get("barmanObjectName"))
        if store is not None:
            sidecars.append(store["spec"]["instanceSidecarConfiguration"]["resources"])
    return sidecars


def quota_admits_full_scale(k8s: Platform) -> None:
    """The ResourceQuota admits the namespace at full scale; every container fits the LimitRange."""
    quotas = [o for o in k8s.objects if o["kind"] == "ResourceQuota"]
    ranges = [o for o in k8s.objects if o["kind"] == "LimitRange"]
    if not quotas or not ranges:
        raise Failed("no ResourceQuota or no LimitRange")
    usage, _ = full_scale(k8s)
    problems = []
    for quota in quotas:
        hard = quota["spec"]["hard"]
        for resource, needed in sorted(usage.items()):
            if resource not in hard:
                problems.append(f"ResourceQuota {quota['metadata']['name']}: no {resource}")
            elif quantity(hard[resource]) < needed:
                problems.append(
                    f"ResourceQuota {quota['metadata']['name']}: {resource} {hard[resource]} "
                    f"< {float(needed):g} at full scale"
                )
    for limits in ranges:
        for item in limits["spec"]["limits"]:
            if item["type"] != "Container":
                continue
            problems += [
                f"LimitRange {limits['metadata']['name']}: {p}" for p in limit_problems(k8s, item)
            ]
    fail_if(problems)


def limit_problems(k8s: Platform, item: dict) -> list[str]:
    """Containers whose requests or limits fall outside a LimitRange item's min and max."""
    problems = []
    for name, resources in containers(k8s):
        for r in RESOURCES:
            for kind in ("requests", "limits"):
                value = resources.get(kind, {}).get(r)
                if value is None:
                    continue
                if r in item.get("max", {}) and quantity(value) > quantity(item["max"][r]):
                    problems.append(f"{name}: {kind}.{r} {value} over max {item['max'][r]}")
                if r in item.get("min", {}) and quantity(value) < quantity(item["min"][r]):
                    problems.append(f"{name}: {kind}.{r} {value} under min {item['min'][r]}")
    return problems


def containers(k8s: Platform):
    """(name, resources) of every container the rendered objects will run."""
    for obj in k8s.objects:
        kind, spec = obj["kind"], obj.get("spec", {})
        if kind in WORKLOADS or kind == "CronJob":
            template = (
                spec["jobTemplate"]["spec"]["template"] if kind == "CronJob" else spec["template"]
            )
            for c in template["spec"].get("initContainers", []) + template["spec"]["containers"]:
                yield f"{kind} {obj['metadata']['name']}/{c['name']}", c.get("resources", {})
        elif kind in ("RabbitmqCluster", "Cluster") and "resources" in spec:
            yield f"{kind} {obj['metadata']['name']}", spec["resources"]
        elif kind == "ObjectStore":
            yield (
                f"ObjectStore {obj['metadata']['name']} sidecar",
                spec["instanceSidecarConfiguration"]["resources"],
            )
