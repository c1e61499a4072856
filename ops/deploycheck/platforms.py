"""One model of both platforms: the processes that swarm/stack.yml and a rendered
k8s overlay run, with their command, environment, mounted secrets and probes.

The consistency checks read this model, so a rule is written once for both.
"""

import json
import posixpath
from dataclasses import dataclass, field

import yaml

# The kinds of k8s object whose pods the checks look into.
WORKLOADS = ("Deployment", "StatefulSet", "Job", "DaemonSet")


@dataclass
class Process:
    """One container (k8s) or service (swarm)."""

    name: str
    command: list[str]
    env: dict[str, str]
    secrets: dict[str, tuple[str, str | None]]  # mounted path -> (secret, key)
    probes: list[list[str]]  # exec commands of its health checks
    labels: dict[str, str] = field(default_factory=dict)
    writable: list[str] = field(default_factory=list)  # tmpfs / emptyDir mount points
    config_files: set[str] = field(default_factory=set)  # mounted ConfigMap items
    unknown_configmaps: list[str] = field(default_factory=list)  # envFrom names not rendered

    def can_write(self, path: str) -> bool:
        return any(
            path == mount or path.startswith(mount.rstrip("/") + "/") for mount in self.writable
        )

    def secret(self, variable: str) -> tuple[str, str | None] | None:
        """The secret item mounted at the path that `variable` names, if any."""
        return self.secrets.get(self.env.get(variable, ""))

    def secret_setting(
        self, name: str, problems: list[str], why: str = ""
    ) -> tuple[str, str | None] | None:
        """The secret item NAME_FILE names; a problem when NAME is set plainly
        (the orchestrator would show it) or NAME_FILE is no mounted secret."""
        if name in self.env:
            problems.append(f"{self.name}: {name} is set plainly (use {name}_FILE)")
        item = self.secret(f"{name}_FILE")
        if item is None:
            problems.append(f"{self.name}: {name}_FILE is not a mounted secret{why}")
        return item


@dataclass
class Platform:
    """What one platform runs: its processes, and (k8s) every rendered object."""

    kind: str  # "swarm" or "k8s"
    source: str  # the rendered configuration, as the tools printed it
    processes: dict[str, Process]
    objects: list[dict] = field(default_factory=list)

    def named(self, kind: str, name: str) -> list[dict]:
        return [o for o in self.objects if o["kind"] == kind and o["metadata"]["name"] == name]

    def referring_to(self, name: str) -> list[str]:
        """Every k8s object whose text mentions `name`, as Kind/name."""
        return [
            f"{o['kind']}/{o['metadata']['name']}" for o in self.objects if name in json.dumps(o)
        ]

    def pod_labels(self) -> list[dict[str, str]]:
        """The labels of every kind of pod the rendered objects run, the operators'
        pods included (operator_pod_labels)."""
        templates = [
            o["spec"]["template"]["metadata"].get("labels", {})
            for o in self.objects
            if o["kind"] in WORKLOADS
        ]
        return templates + [labels for o in self.objects for labels in operator_pod_labels(o)]

    def runs_pods_labelled(self, labels: dict[str, str]) -> bool:
        return any(selected({"matchLabels": labels}, pod) for pod in self.pod_labels())

    def budgeted(self, labels: dict[str, str]) -> bool:
        """Whether a PodDisruptionBudget selects pods with these labels."""
        return any(
            o["kind"] == "PodDisruptionBudget" and selected(o["spec"]["selector"], labels)
            for o in self.objects
        )

    def allows(self, direction, pod_labels, peer_labels=None, port=None, ip_peer=False) -> bool:
        """Whether a NetworkPolicy lets pods with pod_labels talk to (Egress) or hear
        from (Ingress) a peer on port: pods of this namespace with peer_labels, or
        any ipBlock if ip_peer."""
        side, peers_key = ("egress", "to") if direction == "Egress" else ("ingress", "from")
        for policy in self.objects:
            if policy["kind"] != "NetworkPolicy":
                continue
            spec = policy["spec"]
            if direction not in spec.get("policyTypes", []):
                continue
            if not selected(spec["podSelector"], pod_labels):
                continue
            for rule in spec.get(side) or []:
                ports = [p.get("port") for p in rule.get("ports", [])]
                if ports and port not in ports:
                    continue
                peers = rule.get(peers_key)
                if not peers:
                    return True
                for peer in peers:
                    if ip_peer and "ipBlock" in peer:
                        return True
                    if (
                        peer_labels is not None
                        and "podSelector" in peer
                        and "namespaceSelector" not in peer
                        and selected(peer["podSelector"], peer_labels)
                    ):
                        return True
        return False


def operator_pod_labels(obj: dict) -> list[dict[str, str]]:
    """The labels of the pods an operator runs for a custom resource: the
    RabbitMQ Cluster Operator's (v2.22) and CloudNativePG's (v1.30)."""
    name, spec = obj["metadata"]["name"], obj.get("spec", {})
    if obj["kind"] == "RabbitmqCluster":
        own = {
            "app.kubernetes.io/name": name,
            "app.kubernetes.io/component": "rabbitmq",
            "app.kubernetes.io/part-of": "rabbitmq",
        }
        template = spec.get("override", {}).get("statefulSet", {}).get("spec", {})
        return [{**own, **template.get("template", {}).get("metadata", {}).get("labels", {})}]
    if obj["kind"] == "Cluster" and obj["apiVersion"].startswith("postgresql.cnpg.io/"):
        inherited = spec.get("inheritedMetadata", {}).get("labels", {})
        return [{**inherited, "cnpg.io/cluster": name, "cnpg.io/podRole": "instance"}]
    return []


def selected(selector: dict, labels: dict[str, str]) -> bool:
    """A label selector (matchLabels, matchExpressions In/Exists) against labels."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        value = labels.get(expression["key"])
        if expression["operator"] == "In" and value not in expression["values"]:
            return False
        if expression["operator"] == "Exists" and value is None:
            return False
    return True


def secret_path(target: str) -> str:
    """Where swarm mounts a secret: an absolute target, or /run/secrets/<target>."""
    return target if target.startswith("/") else "/run/secrets/" + target


def load_swarm(source: str) -> Platform:
    """The model of `docker-compose config --format json` of the stack."""
    processes = {}
    for name, service in json.loads(source)["services"].items():
        secrets = {
            secret_path(s.get("target") or s["source"]): (s["source"], None)
            for s in service.get("secrets", [])
        }
        test = (service.get("healthcheck") or {}).get("test") or []
        processes[name] = Process(
            name,
            service.get("command") or [],
            {k: str(v or "") for k, v in (service.get("environment") or {}).items()},
            secrets,
            [test[1:]] if test[:1] == ["CMD"] else [],
            writable=[v["target"] for v in service.get("volumes", []) if v.get("type") == "tmpfs"],
        )
    return Platform("swarm", source, processes)


def load_k8s(source: str) -> Platform:
    """The model of a rendered overlay (ConfigMaps resolved through envFrom)."""
    objects = [o for o in yaml.safe_load_all(source) if o]
    configmaps = {
        o["metadata"]["name"]: o.get("data", {}) for o in objects if o["kind"] == "ConfigMap"
    }
    processes = {}
    for workload in objects:
        if workload["kind"] not in WORKLOADS:
            continue
        template = workload["spec"]["template"]
        pod = template["spec"]
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for container in pod.get("initContainers", []) + pod["containers"]:
            process = _container(container, volumes, configmaps)
            name = workload["metadata"]["name"]
            if container["name"] != name:
                process.name = f"{name}/{container['name']}"
            process.labels = template["metadata"].get("labels", {})
            processes[process.name] = process
    return Platform("k8s", source, processes, objects)


def _container(container: dict, volumes: dict, configmaps: dict) -> Process:
    process = Process(
        container["name"],
        container.get("args") or container.get("command") or [],
        {},
        {},
        [
            container[p]["exec"]["command"]
            for p in ("startupProbe", "livenessProbe")
            if "exec" in container.get(p, {})
        ],
    )
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef", {}).get("name")
        if ref is not None and ref not in configmaps:
            process.unknown_configmaps.append(ref)
        process.env.update(configmaps.get(ref, {}))
    process.env.update({e["name"]: e.get("value", "") for e in container.get("env", [])})
    for mount in container.get("volumeMounts", []):
        volume = volumes.get(mount["name"], {})
        if "emptyDir" in volume and not mount.get("readOnly"):
            process.writable.append(mount["mountPath"])
        sources = volume.get("projected", {}).get("sources", []) + [
            {k: volume[k]} for k in ("secret", "configMap") if k in volume
        ]
        for source in sources:
            if "secret" in source:
                secret = source["secret"]
                name = secret.get("name") or secret["secretName"]
                for item in secret.get("items", []):
                    path = posixpath.join(mount["mountPath"], item["path"])
                    process.secrets[path] = (name, item["key"])
            for item in source.get("configMap", {}).get("items", []):
                process.config_files.add(posixpath.join(mount["mountPath"], item["path"]))
    return process
