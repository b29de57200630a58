"""prophetkv in real containers: the image alone, then deploy/compose.yaml.

Usage: docker_test.py --image prophetkv:latest --models models --tasks tasks/dev-niah.jsonl
       [--report docker-report.json]

1. `docker run` of the image with the model directory mounted: it becomes
   ready, and tests/openai_sdk.py passes against it.
2. Compose (two replicas, one Redis):
   - a document registered through replica A is served to replica B from
     Redis (B's `prophetkv` statistics show a remote hit, no computation);
   - Redis stopped: both replicas still answer (recomputing), no 5xx, /ready
     stays up, and /metrics counts the Redis errors; Redis started again:
     remote hits resume;
   - replica A killed with SIGKILL while documents are being registered:
     after its restart every document it acknowledged is there, whole, and
     answers;
   - replica B sent SIGTERM with streams running: the streams finish and the
     container exits 0.
Prints one line per check; exits non-zero at the first failure. The numbers
RESULTS.md reports (image size, cold start, TTFT in and out of the
container) go to --report.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMPOSE = os.path.join(ROOT, "deploy", "compose.yaml")
PROJECT = "prophetkv-test"
TASK_ID = "code-s102-n8-t2000-3"


def check(condition, what):
    if not condition:
        sys.exit(f"FAILED: {what}")
    print(f"ok: {what}", flush=True)


def run(*args, check_rc=True, env=None, capture=True):
    result = subprocess.run(args, capture_output=capture, text=True, env=env)
    if check_rc and result.returncode != 0:
        sys.exit(f"FAILED: {' '.join(args)}\n{result.stdout}\n{result.stderr}")
    return result


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None, timeout=300):
    """(status, parsed JSON or text) of one request; never raises on HTTP errors."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read().decode()
    try:
        return status, json.loads(raw)
    except json.JSONDecodeError:
        return status, raw


def wait_ready(base, seconds=300):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            if http("GET", f"{base}/ready", timeout=5)[0] == 200:
                return True
        except (urllib.error.URLError, ConnectionError, socket.timeout, OSError):
            pass
        time.sleep(0.5)
    return False


def load_task(path):
    with open(path, encoding="utf-8") as f:
        for line in f:
            task = json.loads(line)
            if task["id"] == TASK_ID:
                return task
    sys.exit(f"task {TASK_ID} not in {path}")


def completion(base, task, documents, max_tokens=8):
    body = {"prompt": task["question"], "max_tokens": max_tokens, "temperature": 0,
            "documents": documents, "kv_reuse": {"strategy": "prophetkv", "recompute_ratio": 0.2}}
    started = time.time()
    status, answer = http("POST", f"{base}/v1/completions", body)
    return status, answer, time.time() - started


def metric(base, name):
    status, text = http("GET", f"{base}/metrics")
    for line in text.splitlines() if status == 200 else []:
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def single_container(args, task, report):
    port = free_port()
    name = "prophetkv-test-single"
    run("docker", "rm", "-f", name, check_rc=False)
    started = time.time()
    run("docker", "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8080",
        "-v", f"{os.path.abspath(args.models)}:/models:ro", args.image)
    base = f"http://127.0.0.1:{port}"
    try:
        check(wait_ready(base), "the container becomes ready with the model mounted")
        report["cold_start_to_ready_s"] = round(time.time() - started, 2)
        sdk = run(os.path.join(ROOT, ".venv", "bin", "python"), os.path.join(ROOT, "tests", "openai_sdk.py"),
                  "--base-url", base, "--tasks", args.tasks, check_rc=False)
        print(sdk.stdout, end="")
        check(sdk.returncode == 0 and "all checks passed" in sdk.stdout,
              f"tests/openai_sdk.py passes against the container {sdk.stderr[-400:]}")
        docs = [{"text": d} for d in task["documents"]]
        completion(base, task, docs)  # the documents' caches, computed once
        times = [completion(base, task, docs)[1]["prophetkv"]["timeline"]["first_token_ms"] for _ in range(3)]
        report["container_ttft_ms"] = sorted(times)[1]
        health = run("docker", "inspect", "-f", "{{.State.Health.Status}}", name, check_rc=False).stdout.strip()
        report["healthcheck"] = health
        user = run("docker", "exec", name, "id", "-u").stdout.strip()
        check(user != "0", f"the server runs as a non-root user (uid {user})")
    finally:
        run("docker", "rm", "-f", name, check_rc=False)
    missing = run("docker", "run", "--rm", args.image, check_rc=False)
    check(missing.returncode != 0 and "cannot read model" in missing.stderr,
          f"without a model the container exits with a clear error: {missing.stderr.strip()[-160:]}")
    size = run("docker", "image", "inspect", "-f", "{{.Size}}", args.image).stdout.strip()
    report["image_bytes"] = int(size)


def compose(*args, check_rc=True):
    env = dict(os.environ, MODELS=os.path.abspath(MODELS_DIR))
    return run("docker-compose", "-p", PROJECT, "-f", COMPOSE, *args, check_rc=check_rc, env=env)


def published(service):
    out = compose("port", service, "8080").stdout.strip()
    return f"http://127.0.0.1:{out.rsplit(':', 1)[1]}"


def shared_tier(task, a, b):
    doc = task["documents"][0]
    status, body = http("POST", f"{a}/v1/documents", {"id": "shared", "text": doc})
    check(status == 201, f"a document registers through replica A ({status})")
    deadline = time.time() + 120
    while http("GET", f"{a}/v1/documents/shared")[1].get("ready") is not True:
        if time.time() > deadline:
            check(False, "replica A computes the registered document's cache")
        time.sleep(0.5)
    status, answer, _ = completion(b, task, [{"text": doc}])
    hits = answer["prophetkv"]["cache_hits"] if status == 200 else {}
    check(status == 200 and hits.get("remote") == 1 and hits.get("computed") == 0,
          f"replica B serves it from Redis, computing nothing: {hits}")


def redis_outage(task, a, b):
    compose("stop", "redis")
    for i, base in enumerate((a, b)):
        doc = task["documents"][1 + i]
        status, answer, _ = completion(base, task, [{"text": doc}])
        check(status == 200, f"with Redis stopped replica {'AB'[i]} answers ({status})")
        check(answer["prophetkv"]["cache_hits"]["computed"] == 1, "it recomputed the document")
        check(http("GET", f"{base}/ready")[0] == 200, f"replica {'AB'[i]} stays ready")
        errors = metric(base, "prophetkv_store_tier_errors_total")
        check(errors is not None and errors > 0, f"its metrics count the Redis errors ({errors})")
    compose("start", "redis")
    doc = task["documents"][3]
    deadline = time.time() + 60
    while True:
        completion(a, task, [{"text": doc}])
        status, answer, _ = completion(b, task, [{"text": doc}])
        if status == 200 and answer["prophetkv"]["cache_hits"]["remote"] == 1:
            break
        check(time.time() < deadline, "remote hits resume after Redis is back")
        doc = doc + " "
        time.sleep(1)
    print("ok: remote hits resume after Redis is back", flush=True)


def list_documents(base):
    """Every document, following the list's pages."""
    documents, after = [], None
    while True:
        query = "?limit=100" + (f"&after={after}" if after else "")
        status, page = http("GET", f"{base}/v1/documents{query}")
        if status != 200:
            check(False, f"GET /v1/documents{query} answers 200 ({status})")
        documents.extend(page["data"])
        if not page["has_more"]:
            return documents
        after = page["last_id"]


def kill_during_registration(task, a):
    acknowledged = []
    stop = threading.Event()

    def register():
        for i in range(2000):
            if stop.is_set():
                return
            try:
                status, _ = http("POST", f"{a}/v1/documents",
                                 {"id": f"bulk-{i}", "text": f"{task['documents'][i % 8]} (copy {i})"}, timeout=30)
            except (urllib.error.URLError, ConnectionError, OSError):
                return
            if status == 201:
                acknowledged.append(f"bulk-{i}")

    writer = threading.Thread(target=register)
    writer.start()
    deadline = time.time() + 60
    while len(acknowledged) < 20 and time.time() < deadline:
        time.sleep(0.05)
    compose("kill", "-s", "SIGKILL", "replica-a")
    stop.set()
    writer.join()
    check(0 < len(acknowledged) < 2000 and writer_cut(acknowledged),
          f"replica A was killed in the middle of registering ({len(acknowledged)} of 2000 acknowledged)")
    compose("start", "replica-a")
    check(wait_ready(a), "replica A restarts after SIGKILL")
    listed = list_documents(a)
    ids = {d["id"]: d for d in listed}
    lost = [i for i in acknowledged if i not in ids]
    check(not lost, f"no acknowledged document is lost ({len(acknowledged)} acknowledged, {len(lost)} lost)")
    broken = [d["id"] for d in listed if d["tokens"] <= 0]
    check(not broken, "no document is half-registered")
    last = acknowledged[-1]
    status, answer, _ = completion(a, task, [{"id": last}])
    check(status == 200, f"the last acknowledged document answers ({status})")


def writer_cut(acknowledged):
    """The registrations stopped because the server went away, not because they were done."""
    return acknowledged[-1] != "bulk-1999"


def host_ttft(args, task, report):
    """The same request as in the container, against this machine's own build."""
    binary = os.path.join(ROOT, "target", "release", "prophetkv")
    if not os.path.isfile(binary):
        print("skip: no target/release/prophetkv to compare the container with")
        return
    port = free_port()
    data = subprocess.check_output(["mktemp", "-d"], text=True).strip()
    server = subprocess.Popen([binary, "serve", "--config", os.path.join(ROOT, "config", "default.toml"),
                               "--model", os.path.join(os.path.abspath(args.models), "gemma-3-270m-q4_k_m.gguf"),
                               "--port", str(port), "--data-dir", data, "--redis-url", ""],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        check(wait_ready(base), "the host build becomes ready")
        docs = [{"text": d} for d in task["documents"]]
        completion(base, task, docs)
        times = [completion(base, task, docs)[1]["prophetkv"]["timeline"]["first_token_ms"] for _ in range(3)]
        report["host_ttft_ms"] = sorted(times)[1]
    finally:
        server.terminate()
        server.wait()
        subprocess.run(["rm", "-rf", data])


def sigterm_with_streams(task, b):
    results = []

    def stream():
        body = {"prompt": task["question"], "max_tokens": 48, "temperature": 0, "stream": True,
                "documents": [{"text": task["documents"][5]}]}
        request = urllib.request.Request(f"{b}/v1/completions", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=300) as response:
                results.append(response.read().decode().rstrip().endswith("data: [DONE]"))
        except (urllib.error.URLError, ConnectionError, OSError) as e:
            results.append(f"error: {e}")

    threads = [threading.Thread(target=stream) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(2)
    container = compose("ps", "-q", "replica-b").stdout.strip()
    run("docker", "kill", "-s", "SIGTERM", container)
    for t in threads:
        t.join()
    check(results == [True, True, True], f"streams running at SIGTERM finish with [DONE]: {results}")
    code = run("docker", "wait", container).stdout.strip()
    check(code == "0", f"replica B exits 0 after SIGTERM (exit code {code})")


MODELS_DIR = "models"


def main():
    global MODELS_DIR
    parser = argparse.ArgumentParser()
    parser.add_argument("--image", default="prophetkv:latest")
    parser.add_argument("--models", default="models")
    parser.add_argument("--tasks", default=os.path.join(ROOT, "tasks", "dev-niah.jsonl"))
    parser.add_argument("--report", default=None)
    args = parser.parse_args()
    MODELS_DIR = args.models
    task = load_task(args.tasks)
    report = {}
    single_container(args, task, report)
    host_ttft(args, task, report)
    compose("down", "-v", "--remove-orphans", check_rc=False)
    try:
        compose("up", "-d", "replica-a", "replica-b", "redis")
        a, b = published("replica-a"), published("replica-b")
        check(wait_ready(a) and wait_ready(b), "both compose replicas become ready")
        shared_tier(task, a, b)
        redis_outage(task, a, b)
        kill_during_registration(task, a)
        sigterm_with_streams(task, b)
    finally:
        if os.environ.get("KEEP_COMPOSE") != "1":
            compose("down", "-v", "--remove-orphans", check_rc=False)
    if args.report:
        with open(args.report, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
    print(json.dumps(report))
    print("all docker checks passed")


if __name__ == "__main__":
    main()
