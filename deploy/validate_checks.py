"""Semantic checks of deploy/ that schema validation cannot see.

Run by deploy/validate.sh inside its venv (PyYAML comes with yamllint). Each check prints
one line, `PASS name` or `FAIL name: reason`; validate.sh counts them. Subcommands:

  k8s RENDERED.yaml     the output of `kubectl kustomize deploy/k8s`, plus deploy/k8s/*
  compose               deploy/compose.yaml
  dockerfile            deploy/Dockerfile against Cargo.toml, build.rs and src/
  stage DIR             copy what the builder stage's COPY lines copy into DIR

Paths are relative to the repository root (validate.sh runs from there).
"""

from __future__ import annotations

import fnmatch
import glob
import json
import os
import re
import shlex
import shutil
import sys
from typing import Any, Callable
from urllib.parse import urlparse

import yaml

try:
    import tomllib  # Python 3.11+
except ModuleNotFoundError:  # pragma: no cover - older Pythons get tomli from validate.sh
    import tomli as tomllib  # type: ignore[no-redef]

K8S_DIR = "deploy/k8s"
COMPOSE = "deploy/compose.yaml"
DOCKERFILE = "deploy/Dockerfile"
DOCKERIGNORE = "deploy/Dockerfile.dockerignore"
CONFIG_RS = "src/config.rs"
GRPC_PORT = 50051
# The service stops its background tasks (relay, consumer) for up to 5 s each after the
# drain (src/main.rs); the pods' grace period must cover preStop + drain + this.
TASK_STOP_S = 5

failures = 0


def check(name: str, fn: Callable[[], str | None]) -> None:
    """Runs one check: fn returns None when it passes, or the reason it fails."""
    global failures
    try:
        reason = fn()
    except Exception as e:  # a crash in a check is a failure of that check
        reason = f"{type(e).__name__}: {e}"
    if reason:
        failures += 1
        print(f"FAIL {name}: {reason}")
    else:
        print(f"PASS {name}")


def known_settings() -> set[str]:
    """PRORATA_* names of every setting with a default in src/config.rs (plus the
    variables the binary reads itself)."""
    text = open(CONFIG_RS, encoding="utf-8").read()
    names = {"PRORATA_" + n.upper() for n in re.findall(r'set_default\(\s*"([a-z_]+)"', text)}
    names |= {"PRORATA_CONFIG", "PRORATA_LOG"}
    if len(names) < 10:
        raise RuntimeError(f"found only {len(names)} settings in {CONFIG_RS}")
    return names


def unknown_settings(keys: list[str]) -> str | None:
    known = known_settings()
    bad = sorted(k for k in keys if k.startswith("PRORATA_") and k not in known)
    return f"not settings in {CONFIG_RS}: {bad}" if bad else None


# ----------------------------------------------------------------------------- k8s


def k8s(rendered_path: str) -> None:
    docs = [d for d in yaml.safe_load_all(open(rendered_path, encoding="utf-8")) if d]
    by = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    kust = yaml.safe_load(open(os.path.join(K8S_DIR, "kustomization.yaml"), encoding="utf-8"))
    resources = kust.get("resources", [])
    on_disk = sorted(
        os.path.basename(p)
        for p in glob.glob(os.path.join(K8S_DIR, "*.yaml"))
        if os.path.basename(p) != "kustomization.yaml"
    )

    def kustomization_lists_all() -> str | None:
        missing = [r for r in resources if not os.path.exists(os.path.join(K8S_DIR, r))]
        if missing:
            return f"listed but missing: {missing}"
        examples = [r for r in resources if ".example." in r]
        if examples:
            return f"examples must not be applied: {examples}"
        unlisted = [f for f in on_disk if f not in resources and ".example." not in f]
        return f"manifests not listed: {unlisted}" if unlisted else None

    check("k8s: kustomization lists every manifest and no example", kustomization_lists_all)

    def namespace_agnostic() -> str | None:
        named = [f"{d['kind']}/{d['metadata']['name']}" for d in docs if d["metadata"].get("namespace")]
        raw = []
        for f in on_disk:
            for d in yaml.safe_load_all(open(os.path.join(K8S_DIR, f), encoding="utf-8")):
                if d and d.get("metadata", {}).get("namespace"):
                    raw.append(f)
        if kust.get("namespace"):
            raw.append("kustomization.yaml")
        return f"namespace set in {named + raw}" if named or raw else None

    check("k8s: manifests are namespace-agnostic", namespace_agnostic)

    api = by.get(("Deployment", "prorata"))
    relay = by.get(("Deployment", "prorata-relay"))
    svc = by.get(("Service", "prorata"))
    hpa = by.get(("HorizontalPodAutoscaler", "prorata"))
    pdb = by.get(("PodDisruptionBudget", "prorata"))
    cm = by.get(("ConfigMap", "prorata-config"))

    def all_present() -> str | None:
        absent = [n for n, v in [("Deployment/prorata", api), ("Deployment/prorata-relay", relay),
                                 ("Service/prorata", svc), ("HorizontalPodAutoscaler/prorata", hpa),
                                 ("PodDisruptionBudget/prorata", pdb), ("ConfigMap/prorata-config", cm)] if v is None]
        return f"missing from the rendered output: {absent}" if absent else None

    check("k8s: every expected object is rendered", all_present)
    if None in (api, relay, svc, hpa, pdb, cm):
        return

    def container(dep: dict) -> dict:
        cs = dep["spec"]["template"]["spec"]["containers"]
        return next(c for c in cs if c["name"] == "prorata")

    def env_of(dep: dict) -> dict[str, Any]:
        return {e["name"]: e for e in container(dep).get("env", [])}

    def labels_match(selector: dict, labels: dict) -> bool:
        return all(labels.get(k) == v for k, v in selector.items())

    cm_data = cm.get("data", {})

    def configmap_settings() -> str | None:
        bad = unknown_settings(list(cm_data))
        if bad:
            return bad
        want = {"PRORATA_GRPC_ADDR": f"0.0.0.0:{GRPC_PORT}", "PRORATA_LOG_FORMAT": "json"}
        wrong = {k: cm_data.get(k) for k, v in want.items() if cm_data.get(k) != v}
        if wrong:
            return f"expected {want}, found {wrong}"
        needed = ["PRORATA_REQUEST_TIMEOUT_MS", "PRORATA_MAX_CONCURRENT_REQUESTS",
                  "PRORATA_SHUTDOWN_GRACE_MS", "PRORATA_NATS_URL"]
        absent = [k for k in needed if k not in cm_data]
        if absent:
            return f"missing {absent}"
        if "PRORATA_DATABASE_URL" in cm_data:
            return "the database URL belongs in the Secret, not the ConfigMap"
        return None

    check("k8s: ConfigMap holds known PRORATA_* settings", configmap_settings)

    grace_ms = int(cm_data.get("PRORATA_SHUTDOWN_GRACE_MS", "10000"))

    for dep, component in [(api, "api"), (relay, "relay")]:
        name = dep["metadata"]["name"]
        pod = dep["spec"]["template"]["spec"]
        c = container(dep)

        def selector_ok(dep=dep, component=component) -> str | None:
            sel = dep["spec"]["selector"]["matchLabels"]
            labels = dep["spec"]["template"]["metadata"]["labels"]
            if not labels_match(sel, labels):
                return f"selector {sel} does not match pod labels {labels}"
            if labels.get("app.kubernetes.io/component") != component:
                return f"pod label component should be {component}"
            return None

        check(f"k8s: {name} selector matches its pods", selector_ok)

        def port_ok(c=c) -> str | None:
            ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
            return None if ports.get("grpc") == GRPC_PORT else f"container port grpc should be {GRPC_PORT}: {ports}"

        check(f"k8s: {name} exposes grpc {GRPC_PORT}", port_ok)

        def probes_ok(c=c, component=component) -> str | None:
            kinds = ["startupProbe", "livenessProbe"] + (["readinessProbe"] if component == "api" else [])
            for k in kinds:
                p = c.get(k)
                if not p:
                    return f"{k} missing"
                if p.get("grpc", {}).get("port") != GRPC_PORT:
                    return f"{k} must be a native grpc probe on {GRPC_PORT}: {p}"
            return None

        check(f"k8s: {name} probes are native gRPC health checks", probes_ok)

        def secret_ok(dep=dep) -> str | None:
            e = env_of(dep).get("PRORATA_DATABASE_URL")
            ref = (e or {}).get("valueFrom", {}).get("secretKeyRef", {})
            if ref.get("name") != "prorata-db" or ref.get("key") != "database_url":
                return f"PRORATA_DATABASE_URL must come from secret prorata-db/database_url: {e}"
            froms = [f.get("configMapRef", {}).get("name") for f in c.get("envFrom", [])]
            if "prorata-config" not in froms:
                return f"envFrom must include the ConfigMap prorata-config: {froms}"
            return unknown_settings(list(env_of(dep)))

        check(f"k8s: {name} env: database URL from the Secret, settings from the ConfigMap", secret_ok)

        def security_ok(pod=pod, c=c) -> str | None:
            psc, csc = pod.get("securityContext", {}), c.get("securityContext", {})
            if not (psc.get("runAsNonRoot") or csc.get("runAsNonRoot")):
                return "runAsNonRoot not set"
            uid = csc.get("runAsUser", psc.get("runAsUser"))
            if not uid:
                return "runAsUser must be a non-zero uid"
            if csc.get("readOnlyRootFilesystem") is not True:
                return "readOnlyRootFilesystem must be true"
            if csc.get("allowPrivilegeEscalation") is not False:
                return "allowPrivilegeEscalation must be false"
            return None

        check(f"k8s: {name} runs non-root with a read-only root filesystem", security_ok)

        def resources_ok(c=c) -> str | None:
            r = c.get("resources", {})
            for part in ("requests", "limits"):
                for res in ("cpu", "memory"):
                    if res not in r.get(part, {}):
                        return f"resources.{part}.{res} missing"
            return None

        check(f"k8s: {name} has CPU and memory requests and limits", resources_ok)

        def grace_ok(pod=pod, c=c) -> str | None:
            pre = c.get("lifecycle", {}).get("preStop", {})
            sleep_s = 0
            if "exec" in pre:
                cmd = pre["exec"]["command"]
                if cmd[0] == "sleep":
                    sleep_s = int(cmd[1])
            elif "sleep" in pre:
                sleep_s = int(pre["sleep"]["seconds"])
            need = sleep_s + grace_ms / 1000 + TASK_STOP_S
            have = pod.get("terminationGracePeriodSeconds", 30)
            if have <= need:
                return (f"terminationGracePeriodSeconds {have} must exceed preStop {sleep_s} s"
                        f" + shutdown_grace_ms {grace_ms} ms + task stop {TASK_STOP_S} s")
            return None

        check(f"k8s: {name} grace period covers preStop + drain", grace_ok)

    def api_specifics() -> str | None:
        c = container(api)
        if api["spec"].get("replicas") != 3:
            return "the API Deployment should start with 3 replicas"
        pre = c.get("lifecycle", {}).get("preStop")
        if not pre:
            return "preStop (sleep so endpoints drain before SIGTERM) missing"
        env = env_of(api)
        if env.get("PRORATA_RELAY_ENABLED", {}).get("value") != "false":
            return "PRORATA_RELAY_ENABLED must be \"false\" on the API Deployment"
        return None

    check("k8s: API Deployment: 3 replicas, preStop, relay off", api_specifics)

    def relay_specifics() -> str | None:
        if relay["spec"].get("replicas") != 1:
            return "the relay must run exactly one replica"
        if relay["spec"].get("strategy", {}).get("type") != "Recreate":
            return "the relay must use strategy Recreate (never two at once during a rollout)"
        env = env_of(relay)
        if env.get("PRORATA_RELAY_ENABLED", {}).get("value") != "true":
            return "PRORATA_RELAY_ENABLED must be \"true\" on the relay"
        if env.get("PRORATA_CONSUMER_ENABLED", {}).get("value") != "false":
            return "PRORATA_CONSUMER_ENABLED must be \"false\" on the relay"
        if container(relay)["image"] != container(api)["image"]:
            return "the relay must run the API's image"
        return None

    check("k8s: relay Deployment: 1 replica, Recreate, relay on, consumer off, same image", relay_specifics)

    api_labels = api["spec"]["template"]["metadata"]["labels"]
    relay_labels = relay["spec"]["template"]["metadata"]["labels"]

    def service_ok() -> str | None:
        spec = svc["spec"]
        if spec.get("type", "ClusterIP") != "ClusterIP":
            return "type must be ClusterIP"
        if not labels_match(spec["selector"], api_labels):
            return "selector does not match the API pods"
        if labels_match(spec["selector"], relay_labels):
            return "selector also matches the relay pod"
        ports = spec["ports"]
        p = next((p for p in ports if p.get("name") == "grpc"), None)
        if not p or p["port"] != GRPC_PORT or p.get("appProtocol") != "grpc":
            return f"needs port {GRPC_PORT} named grpc with appProtocol grpc: {ports}"
        names = {q.get("name") for q in container(api).get("ports", [])}
        if isinstance(p.get("targetPort"), str) and p["targetPort"] not in names:
            return f"targetPort {p['targetPort']} names no container port"
        return None

    check("k8s: Service selects only the API pods, grpc port with appProtocol", service_ok)

    def hpa_ok() -> str | None:
        spec = hpa["spec"]
        ref = spec["scaleTargetRef"]
        if (ref["kind"], ref["name"]) != ("Deployment", "prorata"):
            return f"must scale Deployment/prorata, not {ref}"
        if (spec.get("minReplicas"), spec["maxReplicas"]) != (3, 20):
            return "expected minReplicas 3, maxReplicas 20"
        cpu = [m for m in spec.get("metrics", []) if m.get("resource", {}).get("name") == "cpu"]
        if not cpu or cpu[0]["resource"]["target"].get("averageUtilization") != 70:
            return "expected a CPU utilization target of 70"
        if "cpu" not in container(api).get("resources", {}).get("requests", {}):
            return "CPU utilization needs a CPU request on the container"
        return None

    check("k8s: HPA scales the API on CPU 70 %, 3..20", hpa_ok)

    def pdb_ok() -> str | None:
        spec = pdb["spec"]
        if not labels_match(spec["selector"]["matchLabels"], api_labels):
            return "selector does not match the API pods"
        if labels_match(spec["selector"]["matchLabels"], relay_labels):
            return "selector also matches the relay pod"
        if spec.get("minAvailable") != 2:
            return "expected minAvailable 2"
        if spec["minAvailable"] >= hpa["spec"]["minReplicas"]:
            return "minAvailable must stay below the HPA's minReplicas or node drains block"
        return None

    check("k8s: PDB keeps 2 API pods and lets drains proceed", pdb_ok)

    def uid_matches_image() -> str | None:
        uid = dockerfile_user()
        for dep in (api, relay):
            psc = dep["spec"]["template"]["spec"].get("securityContext", {})
            if str(psc.get("runAsUser")) != uid.split(":")[0]:
                return f"{dep['metadata']['name']} runAsUser {psc.get('runAsUser')} != image USER {uid}"
        return None

    check("k8s: runAsUser matches the image's USER", uid_matches_image)


# ----------------------------------------------------------------------------- compose


def compose() -> None:
    doc = yaml.safe_load(open(COMPOSE, encoding="utf-8"))
    services = doc.get("services") or {}

    def expected_services() -> str | None:
        missing = [s for s in ("prorata", "postgres", "redis", "nats") if s not in services]
        return f"missing services {missing}" if missing else None

    check("compose: prorata, postgres, redis and nats are defined", expected_services)

    def depends_on_exist() -> str | None:
        for name, s in services.items():
            deps = s.get("depends_on") or []
            targets = list(deps) if isinstance(deps, (list, dict)) else []
            for t in targets:
                if t not in services:
                    return f"{name} depends on undefined service {t}"
                if isinstance(deps, dict):
                    cond = deps[t].get("condition")
                    if cond == "service_healthy" and "healthcheck" not in services[t]:
                        return f"{name} waits for {t} to be healthy but {t} has no healthcheck"
        return None

    check("compose: every depends_on target exists (and has a healthcheck when awaited)", depends_on_exist)

    def prorata_waits_for_all() -> str | None:
        deps = services["prorata"].get("depends_on") or {}
        for t in ("postgres", "redis", "nats"):
            if not isinstance(deps, dict) or deps.get(t, {}).get("condition") != "service_healthy":
                return f"prorata must depend on {t} with condition service_healthy"
        return None

    check("compose: prorata waits for healthy postgres, redis and nats", prorata_waits_for_all)

    def ports_ok() -> str | None:
        for name, s in services.items():
            for p in s.get("ports", []) or []:
                if isinstance(p, bool) or not isinstance(p, (str, int, dict)):
                    return f"{name}: port {p!r} must be a string or an int"
                if isinstance(p, int) and not isinstance(p, bool):
                    continue
                if isinstance(p, str) and not re.fullmatch(r"(\[?[0-9a-fA-F.:]*\]?:)?(\d+(-\d+)?:)?\d+(-\d+)?(/(tcp|udp))?", p):
                    return f"{name}: port {p!r} is not HOST:CONTAINER"
        published = [str(p) for p in services["prorata"].get("ports", [])]
        if not any(p.split("/")[0].split(":")[-1] == str(GRPC_PORT) for p in published):
            return f"prorata must publish {GRPC_PORT}: {published}"
        return None

    check("compose: ports are strings or ints, prorata publishes 50051", ports_ok)

    def healthchecks_ok() -> str | None:
        for name in ("postgres", "redis", "nats"):
            hc = services[name].get("healthcheck")
            if not hc or not hc.get("test"):
                return f"{name} has no healthcheck"
            if hc.get("disable"):
                return f"{name} healthcheck is disabled"
        return None

    check("compose: postgres, redis and nats have healthchecks", healthchecks_ok)

    def images_ok() -> str | None:
        want = {"postgres": r"postgres:16(\.\d+)*(-[\w.]+)?", "redis": r"redis:7(\.\d+)*(-[\w.]+)?",
                "nats": r"nats:2(\.\d+)*(-[\w.]+)?"}
        for name, pat in want.items():
            img = services[name].get("image", "")
            if not re.fullmatch(pat, img):
                return f"{name} image {img!r} does not match {pat}"
        cmd = services["nats"].get("command") or []
        cmd = shlex.split(cmd) if isinstance(cmd, str) else cmd
        if not {"-js", "--jetstream"} & set(cmd):
            return "nats must run with JetStream (-js)"
        return None

    check("compose: postgres:16, redis:7, nats:2 with JetStream", images_ok)

    def env_ok() -> str | None:
        env = services["prorata"].get("environment") or {}
        if isinstance(env, list):
            env = dict(e.split("=", 1) for e in env)
        bad = unknown_settings(list(env))
        if bad:
            return bad
        want = {
            "PRORATA_DATABASE_URL": "postgres://postgres:postgres@postgres:5432/prorata",
            "PRORATA_NATS_URL": "nats://nats:4222",
            "PRORATA_REDIS_URL": "redis://redis:6379",
        }
        wrong = {k: env.get(k) for k, v in want.items() if env.get(k) != v}
        if wrong:
            return f"expected {want}, found {wrong}"
        for k in want:
            host = urlparse(env[k]).hostname
            if host not in services:
                return f"{k} points at {host}, which is no compose service"
        pg = services["postgres"].get("environment") or {}
        if pg.get("POSTGRES_DB") != urlparse(env["PRORATA_DATABASE_URL"]).path.lstrip("/"):
            return "POSTGRES_DB does not match the database named in PRORATA_DATABASE_URL"
        return None

    check("compose: prorata's environment names known settings and compose hosts", env_ok)

    def build_ok() -> str | None:
        b = services["prorata"].get("build") or {}
        ctx = os.path.normpath(os.path.join(os.path.dirname(COMPOSE), b.get("context", ".")))
        if ctx != ".":
            return f"build context must be the repository root, is {ctx}"
        df = os.path.join(ctx, b.get("dockerfile", "Dockerfile"))
        if os.path.normpath(df) != DOCKERFILE:
            return f"dockerfile must be {DOCKERFILE}, is {df}"
        return None

    check("compose: prorata builds deploy/Dockerfile from the repository root", build_ok)


# ----------------------------------------------------------------------------- Dockerfile


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for raw in open(DOCKERFILE, encoding="utf-8"):
        line = raw.rstrip("\n")
        if not buf and line.lstrip().startswith("#"):
            continue
        if buf and line.lstrip().startswith("#"):
            continue  # comment lines inside a continuation are ignored by Docker too
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        if buf.strip():
            word, _, rest = buf.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def stages() -> list[dict]:
    result: list[dict] = []
    for ins, args in dockerfile_instructions():
        if ins == "FROM":
            parts = args.split()
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            result.append({"from": parts[0], "name": name, "ins": []})
        elif result:
            result[-1]["ins"].append((ins, args))
    return result


def copy_args(args: str) -> tuple[list[str], list[str], str]:
    """(flags, sources, destination) of a COPY instruction."""
    if args.lstrip().startswith("["):
        parts = json.loads(args)
        flags = []
    else:
        parts = shlex.split(args)
        flags = [p for p in parts if p.startswith("--")]
        parts = [p for p in parts if not p.startswith("--")]
    return flags, parts[:-1], parts[-1]


def builder_copies() -> list[tuple[list[str], str, str]]:
    """[(sources, destination, workdir)] of the first stage's COPY lines from the context."""
    st = stages()[0]
    workdir = "/"
    out = []
    for ins, args in st["ins"]:
        if ins == "WORKDIR":
            workdir = os.path.join(workdir, args)
        elif ins in ("COPY", "ADD"):
            flags, srcs, dest = copy_args(args)
            if any(f.startswith("--from") for f in flags):
                continue
            out.append((srcs, dest, workdir))
    return out


def dockerfile_user() -> str:
    users = [a for i, a in stages()[-1]["ins"] if i == "USER"]
    return users[-1] if users else "0"


def copied_top_levels() -> set[str]:
    return {os.path.normpath(s).split(os.sep)[0] for srcs, _, _ in builder_copies() for s in srcs}


def cargo_target_paths() -> list[str]:
    """Paths the manifest needs: declared targets' files (or the default ones)."""
    manifest = tomllib.load(open("Cargo.toml", "rb"))
    paths = ["Cargo.toml", "Cargo.lock"]
    build = manifest.get("package", {}).get("build", "build.rs" if os.path.exists("build.rs") else None)
    if build:
        paths.append(build)
    lib = manifest.get("lib")
    if lib is not None:
        paths.append(lib.get("path", "src/lib.rs"))
    defaults = {"bin": "src/bin/{}.rs", "bench": "benches/{}.rs", "test": "tests/{}.rs", "example": "examples/{}.rs"}
    for kind, pattern in defaults.items():
        for t in manifest.get(kind, []):
            p = t.get("path")
            if p is None:
                p = pattern.format(t["name"])
                if kind == "bin" and t["name"] == manifest["package"]["name"]:
                    p = "src/main.rs"
                alt = os.path.join(os.path.dirname(p), t["name"], "main.rs")
                if not os.path.exists(p) and os.path.exists(alt):
                    p = alt
            paths.append(p)
    return paths


def compile_time_paths() -> list[str]:
    """Directories and files src/ reads at compile time (sqlx::migrate!, include_*!)."""
    out = []
    for f in glob.glob("src/**/*.rs", recursive=True):
        text = open(f, encoding="utf-8").read()
        for m in re.finditer(r'migrate!\(\s*"([^"]+)"', text):
            out.append(os.path.normpath(m.group(1)))
        for m in re.finditer(r'include_(?:str|bytes)!\(\s*"([^"]+)"', text):
            out.append(os.path.normpath(os.path.join(os.path.dirname(f), m.group(1))))
    build_rs = open("build.rs", encoding="utf-8").read() if os.path.exists("build.rs") else ""
    for m in re.finditer(r'"(proto/[^"]+\.proto)"', build_rs):
        out.append(m.group(1))
    return out


def dockerignore_patterns() -> list[str]:
    if not os.path.exists(DOCKERIGNORE):
        return []
    pats = []
    for line in open(DOCKERIGNORE, encoding="utf-8"):
        line = line.strip()
        if line and not line.startswith("#"):
            pats.append(line)
    return pats


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule, simplified: the last pattern matching the path or a parent wins."""
    parts = os.path.normpath(path).split(os.sep)
    prefixes = [os.sep.join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for pat in patterns:
        neg = pat.startswith("!")
        p = os.path.normpath(pat.lstrip("!").lstrip("/"))
        globs = [p, p.replace("**/", "")] if p.startswith("**/") else [p]
        if any(fnmatch.fnmatchcase(pre, g) for pre in prefixes for g in globs):
            result = not neg
    return result


def dockerfile() -> None:
    st = stages()

    def stages_ok() -> str | None:
        if len(st) < 2:
            return "expected a multi-stage build (builder + runtime)"
        b, r = st[0]["from"], st[-1]["from"]
        if not re.fullmatch(r"rust:(\$\{RUST_VERSION\}|1\.\d+(\.\d+)?)-bookworm", b):
            return f"builder should be rust:<version>-bookworm, is {b}"
        if r not in ("debian:bookworm-slim",) and not r.startswith("gcr.io/distroless/cc-debian12"):
            return f"runtime should be debian:bookworm-slim or distroless cc (Debian 12), is {r}"
        return None

    check("Dockerfile: multi-stage, rust bookworm builder, Debian 12 runtime", stages_ok)

    def copies_exist() -> str | None:
        missing = [s for srcs, _, _ in builder_copies() for s in srcs if not glob.glob(s)]
        return f"COPY sources missing from the context: {missing}" if missing else None

    check("Dockerfile: every builder COPY source exists", copies_exist)

    def copies_cover_build() -> str | None:
        tops = copied_top_levels()
        need = cargo_target_paths() + compile_time_paths()
        uncovered = sorted({p for p in need if p.split(os.sep)[0] not in tops and p not in tops})
        return f"the build needs these but the builder does not copy them: {uncovered}" if uncovered else None

    check("Dockerfile: builder copies every Cargo target, build.rs input and migrate!/include path", copies_cover_build)

    def not_ignored() -> str | None:
        pats = dockerignore_patterns()
        hit = [p for p in cargo_target_paths() + compile_time_paths() if ignored(p, pats)]
        hit += [s for srcs, _, _ in builder_copies() for s in srcs if ignored(s, pats)]
        if not ignored("target/release/prorata", pats):
            return f"{DOCKERIGNORE} should keep target/ out of the context"
        return f"excluded by {DOCKERIGNORE} but needed: {sorted(set(hit))}" if hit else None

    check("Dockerfile: Dockerfile.dockerignore excludes target/ and nothing the build needs", not_ignored)

    def build_cmd() -> str | None:
        runs = " ".join(a for i, a in st[0]["ins"] if i == "RUN")
        if not re.search(r"cargo build --release --locked --bin prorata\b", runs):
            return "builder must run `cargo build --release --locked --bin prorata`"
        return None

    check("Dockerfile: builder runs cargo build --release --locked --bin prorata", build_cmd)

    def runtime_ok() -> str | None:
        ins = st[-1]["ins"]
        user = dockerfile_user()
        uid = user.split(":")[0]
        if not uid.isdigit() or uid == "0":
            return f"USER must be a numeric non-root uid (runAsNonRoot needs it), is {user!r}"
        exposes = " ".join(a for i, a in ins if i == "EXPOSE").split()
        if str(GRPC_PORT) not in [e.split("/")[0] for e in exposes]:
            return f"EXPOSE {GRPC_PORT} missing"
        envs = " ".join(a for i, a in ins if i == "ENV")
        if f"PRORATA_GRPC_ADDR=0.0.0.0:{GRPC_PORT}" not in envs:
            return "ENV PRORATA_GRPC_ADDR=0.0.0.0:50051 missing"
        ep = [a for i, a in ins if i == "ENTRYPOINT"]
        cmd = [a for i, a in ins if i == "CMD"]
        if not ep or json.loads(ep[-1]) != ["prorata"]:
            return f'ENTRYPOINT must be ["prorata"], is {ep}'
        if not cmd or json.loads(cmd[-1]) != ["serve"]:
            return f'CMD must be ["serve"], is {cmd}'
        copies = [copy_args(a) for i, a in ins if i == "COPY"]
        if not any(any(f.startswith("--from=") for f in fl) and d.startswith("/usr/local/bin") for fl, _, d in copies):
            return "the binary must be copied from the builder into /usr/local/bin (on PATH)"
        return None

    check("Dockerfile: runtime is non-root, exposes 50051, runs `prorata serve`", runtime_ok)


def stage(dest: str) -> None:
    """Copies what the builder stage copies, relative to its WORKDIR, into dest."""
    copies = builder_copies()
    base_workdir = copies[0][2] if copies else "/"
    for srcs, d, workdir in copies:
        root = os.path.join(dest, os.path.relpath(os.path.join(workdir, d), base_workdir))
        many = len(srcs) > 1 or d.endswith("/")
        for s in srcs:
            for src in glob.glob(s):
                target = os.path.join(root, os.path.basename(src)) if many else root
                os.makedirs(os.path.dirname(os.path.normpath(target)) or ".", exist_ok=True)
                if os.path.isdir(src):
                    shutil.copytree(src, target, dirs_exist_ok=True)
                else:
                    shutil.copy2(src, target)
    print(f"staged {len(copies)} COPY instructions into {dest}")


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    cmd = sys.argv[1]
    if cmd == "k8s":
        k8s(sys.argv[2])
    elif cmd == "compose":
        compose()
    elif cmd == "dockerfile":
        dockerfile()
    elif cmd == "stage":
        stage(sys.argv[2])
        return 0
    else:
        print(__doc__)
        return 2
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
