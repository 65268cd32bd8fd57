#!/usr/bin/env python3
"""Uploads into berth against Debian's docker-registry (distribution 2.8.2, what registry:2 is), in one run,
both on filesystem storage on 127.0.0.1. Prints one table. Standard library only; builds nothing: uses
target/release/berth (or $BERTH), docker-registry, and for the last two workloads dockerd, docker, skopeo.

    bench/uploads.py                                  # everything, RUNS=2 (about 5 minutes on 2 cores)
    RUNS=1 MIB=32 MANIFESTS=200 DOCKER_MIB=40 LAYER_MIB=8 bench/uploads.py   # a smoke run
    ONLY=mono,chunked RUNS=3 bench/uploads.py         # some workloads only
    OUT=/tmp/uploads.json bench/uploads.py            # also write the raw results as JSON
    KEEP=1 bench/uploads.py                           # keep the work directories (logs, storage roots)

mono       POST, then PUT of a fresh MIB (256) MiB blob with `?digest=`: MiB/s
chunked    POST, MIB MiB in CHUNK_MIB (8) MiB PATCHes with Content-Range, following Location, then PUT
           `?digest=` with an empty body: MiB/s
manifests  MANIFESTS (2000) OCI image manifests PUT by tag (t0..) into one repository from CLIENTS (8)
           threads, one keep-alive connection each (config and layer uploaded before, not timed):
           manifests/s, p50 and p99 ms
           CPU: server utime+stime (/proc/PID/stat) over mono and chunked, per GiB uploaded
docker     `docker push` of a DOCKER_MIB (200) MiB one-layer image (`docker import` of a tar of random
           files) and of a LAYERS (5) x LAYER_MIB (40) MiB image (`docker build`, FROM scratch + COPY): s
skopeo     `skopeo copy` of the multi-layer image from an OCI layout (written once from the docker daemon,
           layers gzip-compressed there) to docker://127.0.0.1:PORT: s
           CPU: server CPU seconds over the docker and skopeo rows (per run)

Each workload runs against berth, then the reference, RUNS (2) times, before the next starts (docker and
skopeo after one untimed push of each to the reference, which warms the page cache); the table has
the median of the runs and "berth x", berth's advantage, higher is better: berth/registry for rates,
registry/berth for times and CPU. mono, chunked and manifests use one long-lived server per registry; every
docker push and skopeo copy goes to a fresh server on an empty storage root (docker mounts blobs across
repositories, so a new repository name would not be enough). One dockerd (vfs, no networking) serves the
whole run, with its own data root and socket under /tmp. Every blob upload is checked by a HEAD (size and
Docker-Content-Digest), every push by the manifest's digest and a HEAD of each blob it references; every
unexpected HTTP status or failed command ends the run. Both registries use one config.yml (bench/run.sh's:
delete enabled, access log off, `cache.blobdescriptor: inmemory`, which berth ignores), with the address and
storage root from REGISTRY_HTTP_ADDR and REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY.

Timings are only meaningful on a quiet machine: the load average is printed before and after.
"""

import atexit
import concurrent.futures as cf
import hashlib
import itertools
import json
import http.client
import math
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
BERTH = os.environ.get("BERTH") or os.path.join(REPO, "target/release/berth")
RUNS = int(os.environ.get("RUNS", "2"))
MIB = int(os.environ.get("MIB", "256"))
CHUNK_MIB = int(os.environ.get("CHUNK_MIB", "8"))
MANIFESTS = int(os.environ.get("MANIFESTS", "2000"))
CLIENTS = int(os.environ.get("CLIENTS", "8"))
DOCKER_MIB = int(os.environ.get("DOCKER_MIB", "200"))
LAYERS = int(os.environ.get("LAYERS", "5"))
LAYER_MIB = int(os.environ.get("LAYER_MIB", "40"))
WORKLOADS = ("mono", "chunked", "manifests", "docker", "skopeo")
ONLY = [w.strip() for w in os.environ.get("ONLY", ",".join(WORKLOADS)).split(",") if w.strip()]
OUT = os.environ.get("OUT")
KEEP = bool(os.environ.get("KEEP"))
TIMEOUT = 300  # seconds: one HTTP request, one command
PHASE_SECS = 900  # seconds: one workload's loop of requests
REGISTRIES = ("berth", "registry")
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MANIFEST_ACCEPT = "application/vnd.docker.distribution.manifest.v2+json, " + OCI_MANIFEST

# bench/run.sh's configuration (see bench/config.yml).
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "config.yml")) as _f:
    CONFIG = _f.read()


class Fail(Exception):
    pass


# ---- processes and cleanup: everything started is in PROCS, stopped newest first on any exit.

PROCS = []  # (Popen, stop function)
DIRS = []


def cleanup():
    while PROCS:
        proc, stop = PROCS.pop()
        try:
            stop(proc)
        except Exception as e:  # keep stopping the others
            print(f"cleanup: {e}", file=sys.stderr)
    while DIRS:
        d = DIRS.pop()
        if KEEP:
            print(f"kept: {d}", file=sys.stderr)
        else:
            shutil.rmtree(d, ignore_errors=True)


def terminate(proc, grace=10):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def on_signal(signum, _frame):
    raise SystemExit(128 + signum)


def make_dir(prefix, parent="/var/tmp"):
    d = tempfile.mkdtemp(prefix=prefix, dir=parent)
    DIRS.append(d)
    return d


USED_PORTS = set()


def free_port():
    """A port below the ephemeral range, free on 127.0.0.1 and ::1 (docker dials localhost), and not handed
    out before in this run (so that no client of an earlier server reaches a later one)."""
    for _ in range(200):
        p = random.randint(20000, 31999)
        if p in USED_PORTS:
            continue
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", p))
            with socket.socket(socket.AF_INET6) as s:
                s.bind(("::1", p))
        except OSError as e:
            if e.errno != 99:  # EADDRNOTAVAIL: no IPv6 loopback, nothing can listen there
                continue
        USED_PORTS.add(p)
        return p
    raise Fail("no free port")


def cpu(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(cmd, env=None, timeout=TIMEOUT):
    """Runs a command to completion; its output, or Fail with the output's tail."""
    try:
        p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise Fail(f"{' '.join(cmd)}: timed out after {timeout} s")
    out = p.stdout.decode(errors="replace")
    if p.returncode != 0:
        raise Fail(f"{' '.join(cmd)}: exit {p.returncode}\n{out[-3000:]}")
    return out


class Server:
    """berth or docker-registry on 127.0.0.1, a free port and its own storage root under `work`."""

    def __init__(self, kind, work, config, label):
        self.kind = kind
        self.port = free_port()
        self.root = os.path.join(work, f"{label}-root")
        os.makedirs(self.root)
        self.log = os.path.join(work, f"{label}.log")
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        env["REGISTRY_HTTP_ADDR"] = f"127.0.0.1:{self.port}"
        env["REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY"] = self.root
        cmd = [BERTH if kind == "berth" else "docker-registry", "serve", config]
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL)
        PROCS.append((self.proc, terminate))
        deadline = time.time() + 30
        while True:
            if self.proc.poll() is not None:
                raise Fail(f"{kind} on {self.port} exited {self.proc.returncode}:\n{self.tail()}")
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                c.request("GET", "/v2/")
                r = c.getresponse()
                r.read()
                c.close()
                if r.status == 200:
                    break
                raise Fail(f"{kind}: GET /v2/ answered {r.status}")
            except OSError:
                if time.time() > deadline:
                    raise Fail(f"{kind} on {self.port} did not start:\n{self.tail()}")
                time.sleep(0.05)

    def tail(self):
        with open(self.log, errors="replace") as f:
            return f.read()[-2000:]

    def cpu(self):
        return cpu(self.proc.pid)

    def conn(self):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT)

    def stop(self):
        terminate(self.proc)
        PROCS[:] = [p for p in PROCS if p[0] is not self.proc]
        if not KEEP:
            shutil.rmtree(self.root, ignore_errors=True)


# ---- HTTP

def request(conn, method, path, body=None, headers=None, expect=200):
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    data = r.read()
    if r.status != expect:
        raise Fail(f"{method} {path}: {r.status} (expected {expect}): {data[:500]!r}")
    return r, data


def location(r):
    """The Location of an upload as a request target (registry:2 answers with an absolute URL)."""
    loc = r.getheader("Location")
    if not loc:
        raise Fail(f"no Location in the {r.status} answer")
    u = urllib.parse.urlsplit(loc)
    return u.path + (f"?{u.query}" if u.query else "")


def with_digest(loc, digest):
    return f"{loc}{'&' if '?' in loc else '?'}digest={digest}"


def check_digest(r, digest, what):
    got = r.getheader("Docker-Content-Digest")
    if got != digest:
        raise Fail(f"{what}: Docker-Content-Digest {got}, expected {digest}")


def verify_blob(conn, repo, digest, size):
    r, _ = request(conn, "HEAD", f"/v2/{repo}/blobs/{digest}")
    check_digest(r, digest, f"HEAD blob {digest}")
    if r.getheader("Content-Length") != str(size):
        raise Fail(f"HEAD blob {digest}: Content-Length {r.getheader('Content-Length')}, expected {size}")


def sha256(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


def upload_mono(srv, repo, blob, digest):
    """POST, PUT of the whole blob; the seconds from the POST to the 201."""
    c = srv.conn()
    t0 = time.perf_counter()
    r, _ = request(c, "POST", f"/v2/{repo}/blobs/uploads/", expect=202)
    r, _ = request(c, "PUT", with_digest(location(r), digest), body=blob,
                   headers={"Content-Type": "application/octet-stream"}, expect=201)
    secs = time.perf_counter() - t0
    check_digest(r, digest, "PUT blob")
    verify_blob(c, repo, digest, len(blob))
    c.close()
    return secs


def upload_chunked(srv, repo, blob, digest, chunk):
    """POST, PATCHes of `chunk` bytes with Content-Range, PUT with an empty body; seconds to the 201."""
    c = srv.conn()
    view = memoryview(blob)
    t0 = time.perf_counter()
    r, _ = request(c, "POST", f"/v2/{repo}/blobs/uploads/", expect=202)
    loc = location(r)
    for start in range(0, len(blob), chunk):
        end = min(start + chunk, len(blob))
        r, _ = request(c, "PATCH", loc, body=view[start:end], expect=202, headers={
            "Content-Type": "application/octet-stream", "Content-Range": f"{start}-{end - 1}"})
        if r.getheader("Range") != f"0-{end - 1}":
            raise Fail(f"PATCH {start}-{end - 1}: Range {r.getheader('Range')}")
        loc = location(r)
        if time.perf_counter() - t0 > PHASE_SECS:
            raise Fail("chunked upload: out of time")
    r, _ = request(c, "PUT", with_digest(loc, digest), body=b"", expect=201)
    secs = time.perf_counter() - t0
    check_digest(r, digest, "PUT chunked blob")
    verify_blob(c, repo, digest, len(blob))
    c.close()
    return secs


def push_blob(conn, repo, data):
    d = sha256(data)
    r, _ = request(conn, "POST", f"/v2/{repo}/blobs/uploads/", expect=202)
    request(conn, "PUT", with_digest(location(r), d), body=data, expect=201,
            headers={"Content-Type": "application/octet-stream"})
    verify_blob(conn, repo, d, len(data))
    return {"digest": d, "size": len(data)}


def put_manifests(srv, repo, run_no):
    """MANIFESTS manifests by tag from CLIENTS threads: (seconds, latencies in s)."""
    c = srv.conn()
    layer = push_blob(c, repo, os.urandom(4096))
    config = push_blob(c, repo, json.dumps({
        "architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [layer["digest"]]}}).encode())
    bodies = [json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": dict(config, mediaType="application/vnd.oci.image.config.v1+json"),
        "layers": [dict(layer, mediaType="application/vnd.oci.image.layer.v1.tar")],
        "annotations": {"org.example.bench.run": str(run_no), "org.example.bench.index": str(i)},
    }).encode() for i in range(MANIFESTS)]
    digests = [sha256(b) for b in bodies]
    counter = itertools.count()
    lock = threading.Lock()
    deadline = time.perf_counter() + PHASE_SECS
    stop = threading.Event()  # set when the run ends early, so that no client outlives it

    def client():
        conn = srv.conn()
        lat = []
        while time.perf_counter() < deadline and not stop.is_set():
            with lock:
                i = next(counter)
            if i >= MANIFESTS:
                break
            t = time.perf_counter()
            r, _ = request(conn, "PUT", f"/v2/{repo}/manifests/t{i}", body=bodies[i],
                           headers={"Content-Type": OCI_MANIFEST}, expect=201)
            lat.append(time.perf_counter() - t)
            check_digest(r, digests[i], f"PUT manifest t{i}")
        conn.close()
        return lat

    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(CLIENTS) as ex:
        futures = [ex.submit(client) for _ in range(CLIENTS)]
        try:
            lats = [x for f in futures for x in f.result()]
        except BaseException:
            stop.set()
            raise
    secs = time.perf_counter() - t0
    if len(lats) != MANIFESTS:
        raise Fail(f"manifests: {len(lats)} of {MANIFESTS} in {PHASE_SECS} s")
    for i in sorted({0, MANIFESTS // 2, MANIFESTS - 1}):
        r, body = request(c, "GET", f"/v2/{repo}/manifests/t{i}", headers={"Accept": OCI_MANIFEST})
        if sha256(body) != digests[i]:
            raise Fail(f"GET manifest t{i}: other bytes than pushed")
    c.close()
    return secs, lats


def percentile(xs, p):
    xs = sorted(xs)
    return xs[max(0, min(len(xs) - 1, math.ceil(p / 100 * len(xs)) - 1))]


def verify_image(srv, repo, tag, digest, layers):
    """The manifest under `tag` has `digest`, `layers` layers, and every blob it names is there."""
    c = srv.conn()
    r, body = request(c, "GET", f"/v2/{repo}/manifests/{tag}", headers={"Accept": MANIFEST_ACCEPT})
    check_digest(r, digest, f"GET manifest {repo}:{tag}")
    if sha256(body) != digest:
        raise Fail(f"GET manifest {repo}:{tag}: body is not {digest}")
    m = json.loads(body)
    if len(m["layers"]) != layers:
        raise Fail(f"{repo}:{tag}: {len(m['layers'])} layers, expected {layers}")
    for b in m["layers"] + [m["config"]]:
        verify_blob(c, repo, b["digest"], b["size"])
    c.close()


# ---- dockerd

class Docker:
    """One dockerd for the run: vfs, no iptables, no bridge, data and exec roots of its own under /tmp."""

    def __init__(self):
        self.dir = make_dir("ubd.", "/tmp")
        self.exec_root = make_dir("ubX", "/tmp")  # containerd's socket path must stay short
        self.sock = os.path.join(self.dir, "docker.sock")
        cfg = os.path.join(self.dir, "cli")
        os.makedirs(cfg)
        self.env = dict(os.environ, DOCKER_HOST=f"unix://{self.sock}", DOCKER_CONFIG=cfg)
        self.log = os.path.join(self.dir, "dockerd.log")
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                ["dockerd", "--iptables=false", "--ip6tables=false", "--bridge=none", "--storage-driver=vfs",
                 "--data-root", os.path.join(self.dir, "data"), "--exec-root", self.exec_root,
                 "--pidfile", os.path.join(self.dir, "docker.pid"), "-H", f"unix://{self.sock}"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        PROCS.append((self.proc, self.stop))
        deadline = time.time() + 60
        while subprocess.run(["docker", "version"], env=self.env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, timeout=30).returncode != 0:
            if self.proc.poll() is not None or time.time() > deadline:
                with open(self.log, errors="replace") as f:
                    raise Fail(f"dockerd did not start:\n{f.read()[-2000:]}")
            time.sleep(0.25)
        # The CLI's `docker build` is BuildKit through the buildx plugin; without it, the legacy builder.
        if subprocess.run(["docker", "buildx", "version"], env=self.env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode != 0:
            self.env["DOCKER_BUILDKIT"] = "0"

    def docker(self, *args, timeout=TIMEOUT):
        return run(["docker", *args], env=self.env, timeout=timeout)

    def stop(self, proc):
        """dockerd stops its containerd on SIGTERM; after a SIGKILL, that containerd is killed by its pid
        file here, and whatever dockerd left mounted under its directories is unmounted."""
        terminate(proc, grace=30)
        pidfile = os.path.join(self.exec_root, "containerd", "containerd.pid")
        try:
            pid = int(open(pidfile).read().strip())
            if self.exec_root in open(f"/proc/{pid}/cmdline").read():
                os.kill(pid, signal.SIGKILL)
        except (OSError, ValueError):
            pass
        with open("/proc/mounts") as f:
            mounts = [line.split()[1] for line in f]
        for m in reversed(mounts):
            if m.startswith((self.dir + "/", self.exec_root + "/")) or m in (self.dir, self.exec_root):
                subprocess.run(["umount", "-l", m], stderr=subprocess.DEVNULL)


def random_file(path, mib):
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(os.urandom(1 << 20))


def make_images(d, work):
    """ub-single:latest (DOCKER_MIB in one layer, from `docker import`) and ub-multi:latest (LAYERS
    layers of LAYER_MIB from `docker build`), random bytes so that docker's gzip cannot shrink them."""
    src = os.path.join(work, "single")
    os.makedirs(src)
    left, i = DOCKER_MIB, 0
    while left > 0:
        n = min(left, 50)
        random_file(os.path.join(src, f"f{i}"), n)
        left, i = left - n, i + 1
    tar = os.path.join(work, "single.tar")
    with tarfile.open(tar, "w") as t:
        t.add(src, arcname="data")
    d.docker("import", tar, "ub-single:latest")
    shutil.rmtree(src)
    os.remove(tar)
    ctx = os.path.join(work, "multi")
    os.makedirs(ctx)
    lines = ["FROM scratch"]
    for i in range(LAYERS):
        random_file(os.path.join(ctx, f"l{i}"), LAYER_MIB)
        lines.append(f"COPY l{i} /l{i}")
    with open(os.path.join(ctx, "Dockerfile"), "w") as f:
        f.write("\n".join(lines) + "\n")
    d.docker("build", "-q", "-t", "ub-multi:latest", ctx, timeout=900)
    shutil.rmtree(ctx)


def docker_push(d, srv, image, repo, tag, layers):
    ref = f"localhost:{srv.port}/{repo}:{tag}"
    d.docker("tag", image, ref)
    t0 = time.perf_counter()
    out = d.docker("push", ref, timeout=900)
    secs = time.perf_counter() - t0
    m = re.search(r"digest: (sha256:[0-9a-f]{64}) size: \d+", out)
    if not m:
        raise Fail(f"docker push {ref}: no digest in its output:\n{out[-2000:]}")
    d.docker("rmi", ref)  # the tag only: the image stays under its own name
    verify_image(srv, repo, tag, m.group(1), layers)
    return secs


def skopeo_copy(layout, srv, repo, tag, work):
    digestfile = os.path.join(work, "skopeo.digest")
    t0 = time.perf_counter()
    run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--digestfile", digestfile,
         f"oci:{layout}:latest", f"docker://127.0.0.1:{srv.port}/{repo}:{tag}"], timeout=900)
    secs = time.perf_counter() - t0
    with open(digestfile) as f:
        digest = f.read().strip()
    verify_image(srv, repo, tag, digest, LAYERS)
    return secs


# ---- the run

def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def num(v):
    if v is None:
        return "-"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def main():
    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)
    atexit.register(cleanup)
    unknown = [w for w in ONLY if w not in WORKLOADS]
    if unknown:
        sys.exit(f"ONLY: unknown {unknown}; known: {','.join(WORKLOADS)}")
    wants = lambda w: w in ONLY
    needed = ["docker-registry"]
    if wants("docker") or wants("skopeo"):
        needed += ["dockerd", "docker"]
    if wants("skopeo"):
        needed.append("skopeo")
    missing = [t for t in needed if not shutil.which(t)]
    if not os.access(BERTH, os.X_OK):
        missing.append(f"{BERTH} (cargo build --release)")
    if missing:
        sys.exit(f"missing: {', '.join(missing)}")

    work = make_dir("berth-uploads.")
    config = os.path.join(work, "config.yml")
    with open(config, "w") as f:
        f.write(CONFIG)
    raw = {name: {} for name in REGISTRIES}

    def put(name, key, v):
        raw[name].setdefault(key, []).append(v)

    load_before = loadavg()
    print(f"load average before the run: {load_before}", file=sys.stderr)
    t_start = time.time()
    try:
        # mono, chunked, manifests: one long-lived server per registry.
        if wants("mono") or wants("chunked") or wants("manifests"):
            servers = {name: Server(name, work, config, name) for name in REGISTRIES}
            up_cpu = {name: 0.0 for name in REGISTRIES}
            up_bytes = {name: 0 for name in REGISTRIES}
            if wants("mono") or wants("chunked"):
                blob = bytearray(os.urandom(MIB << 20))
                seq = itertools.count(1)
            for wl in ("mono", "chunked"):
                if not wants(wl):
                    continue
                for r in range(RUNS):
                    for name, srv in servers.items():
                        blob[:8] = next(seq).to_bytes(8, "big")  # a fresh blob every time
                        digest = sha256(blob)
                        c0 = srv.cpu()
                        if wl == "mono":
                            secs = upload_mono(srv, f"bench/{wl}", blob, digest)
                        else:
                            secs = upload_chunked(srv, f"bench/{wl}", blob, digest, CHUNK_MIB << 20)
                        up_cpu[name] += srv.cpu() - c0
                        up_bytes[name] += len(blob)
                        put(name, wl, MIB / secs)
                        print(f"{wl} run {r + 1} {name}: {MIB / secs:.0f} MiB/s", file=sys.stderr)
            if wants("mono") or wants("chunked"):
                del blob
                for name in REGISTRIES:
                    put(name, "cpu_per_gib", up_cpu[name] / (up_bytes[name] / (1 << 30)))
            if wants("manifests"):
                for r in range(RUNS):
                    for name, srv in servers.items():
                        secs, lats = put_manifests(srv, f"bench/manifests{r}", r)
                        put(name, "manifests", MANIFESTS / secs)
                        put(name, "manifests_p50", percentile(lats, 50) * 1000)
                        put(name, "manifests_p99", percentile(lats, 99) * 1000)
                        print(f"manifests run {r + 1} {name}: {MANIFESTS / secs:.0f}/s", file=sys.stderr)
            for srv in servers.values():
                srv.stop()

        # docker, skopeo: one dockerd; a fresh server on an empty root for every push.
        if wants("docker") or wants("skopeo"):
            d = Docker()
            make_images(d, work)
            layout = os.path.join(work, "oci")
            if wants("skopeo"):
                run(["skopeo", "copy", "--quiet", "--src-daemon-host", f"unix://{d.sock}",
                     "docker-daemon:ub-multi:latest", f"oci:{layout}:latest"], timeout=900)
            pushes = []
            if wants("docker"):
                pushes += [("docker_single", lambda srv, r: docker_push(d, srv, "ub-single:latest", "bench/single", f"r{r}", 1)),
                           ("docker_multi", lambda srv, r: docker_push(d, srv, "ub-multi:latest", "bench/multi", f"r{r}", LAYERS))]
            if wants("skopeo"):
                pushes.append(("skopeo", lambda srv, r: skopeo_copy(layout, srv, "bench/skopeo", f"r{r}", work)))
            fresh = itertools.count()
            # One untimed push of each first, to the reference: the first push of an image reads its
            # layers from a cold page cache, and would make whichever registry comes first look slower.
            for key, push in pushes:
                srv = Server("registry", work, config, f"warm-{key}")
                push(srv, "warm")
                srv.stop()
            for r in range(RUNS):
                round_cpu = {name: 0.0 for name in REGISTRIES}
                for key, push in pushes:
                    for name in REGISTRIES:
                        srv = Server(name, work, config, f"{name}-{key}-{next(fresh)}")
                        c0 = srv.cpu()
                        secs = push(srv, r)
                        round_cpu[name] += srv.cpu() - c0
                        srv.stop()
                        put(name, key, secs)
                        print(f"{key} run {r + 1} {name}: {secs:.2f} s", file=sys.stderr)
                for name in REGISTRIES:
                    put(name, "push_cpu", round_cpu[name])
    except Fail as e:
        print(f"FAILED: {e}", file=sys.stderr)
        sys.exit(1)
    finally:
        cleanup()
    load_after = loadavg()
    print(f"load average after the run: {load_after} ({time.time() - t_start:.0f} s)", file=sys.stderr)

    push_names = [n for n, w in (("docker push", "docker"), ("skopeo", "skopeo")) if wants(w)]
    rows = [  # key, label, unit, higher is better
        ("mono", f"monolithic {MIB} MiB", "MiB/s", True),
        ("chunked", f"chunked {MIB} MiB / {CHUNK_MIB} MiB", "MiB/s", True),
        ("manifests", f"{MANIFESTS:,} manifest PUTs, {CLIENTS} clients", "manifests/s", True),
        ("manifests_p50", "manifest PUT p50", "ms", False),
        ("manifests_p99", "manifest PUT p99", "ms", False),
        ("cpu_per_gib", "CPU per GiB uploaded (mono+chunked)", "s", False),
        ("docker_single", f"docker push {DOCKER_MIB} MiB, 1 layer", "s", False),
        ("docker_multi", f"docker push {LAYERS} x {LAYER_MIB} MiB", "s", False),
        ("skopeo", f"skopeo copy {LAYERS} x {LAYER_MIB} MiB (oci:)", "s", False),
        ("push_cpu", f"CPU over {' + '.join(push_names)}, per run", "s", False),
    ]
    table = []
    lines = [f"{'workload':<40} {'unit':>11} {'berth':>9} {'registry':>9} {'berth x':>8}"]
    for key, label, unit, higher in rows:
        b, g = (statistics.median(raw[n][key]) if raw[n].get(key) else None for n in REGISTRIES)
        if b is None and g is None:
            continue
        x = (b / g if higher else g / b) if b and g else None
        table.append({"key": key, "label": label, "unit": unit, "berth": b, "registry": g, "berth_x": x})
        lines.append(f"{label:<40} {unit:>11} {num(b):>9} {num(g):>9} {'-' if x is None else f'{x:.2f}':>8}")
    print(f"uploads, berth against docker-registry 2.8.2, filesystem storage, 127.0.0.1; median of RUNS={RUNS}")
    print("\n".join(lines))
    print("(berth x: berth's advantage, higher is better: berth/registry for rates, registry/berth for times and CPU)")
    if OUT:
        with open(OUT, "w") as f:
            json.dump({
                "params": {"runs": RUNS, "mib": MIB, "chunk_mib": CHUNK_MIB, "manifests": MANIFESTS,
                           "clients": CLIENTS, "docker_mib": DOCKER_MIB, "layers": LAYERS, "layer_mib": LAYER_MIB,
                           "only": ONLY, "berth": BERTH},
                "loadavg_before": load_before, "loadavg_after": load_after,
                "raw": raw, "table": table,
            }, f, indent=1)


if __name__ == "__main__":
    main()
