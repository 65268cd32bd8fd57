#!/usr/bin/env python3
"""The pull-through cache against registry:2's, in one run: both in front of one upstream (Debian's
docker-registry, distribution 2.8.2), on 127.0.0.1. Prints one table. Standard library only.

    bench/proxy.py                      # builds nothing: uses target/release/berth (cargo build --release)
    LAYERS=4 LAYER_MIB=64 CLIENTS=16 bench/proxy.py

P1  cold pull of an image (manifest by tag, then its layers, 4 at a time): seconds, upstream blob GETs
P2  the same pull again (cached): seconds
P3  CLIENTS concurrent GETs of one cold blob: seconds until all are done, median time to first byte,
    upstream GETs of that blob, whether every client got the right bytes
P4  the upstream stopped: a pull of the cached tag (status), of an uncached tag (status)
CPU seconds of each cache process over P1 to P3 (utime + stime from /proc).
"""

import concurrent.futures as cf
import hashlib
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
BERTH = os.environ.get("BERTH", os.path.join(REPO, "target/release/berth"))
LAYERS = int(os.environ.get("LAYERS", "4"))
LAYER_MIB = int(os.environ.get("LAYER_MIB", "64"))
CLIENTS = int(os.environ.get("CLIENTS", "16"))
TIMEOUT = 120


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(port, proc, log):
    deadline = time.time() + 30
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"server on {port} exited:\n{open(log).read()[-2000:]}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/v2/")
            c.getresponse().read()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"server on {port} did not start")


def start(cmd, config_text, work, name):
    cfg = os.path.join(work, f"{name}.yml")
    log = os.path.join(work, f"{name}.log")
    with open(cfg, "w") as f:
        f.write(config_text)
    proc = subprocess.Popen(cmd + [cfg], stdout=open(log, "w"), stderr=subprocess.STDOUT)
    return proc, log


def config(port, root, extra="", accesslog=True):
    return (
        f"version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: {'false' if accesslog else 'true'}\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n{extra}"
    )


def push_blob(port, repo, data):
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    c.request("POST", f"/v2/{repo}/blobs/uploads/")
    r = c.getresponse()
    r.read()
    loc = r.getheader("Location")
    sep = "&" if "?" in loc else "?"
    c.request("PUT", f"{loc}{sep}digest={d}", body=data, headers={"Content-Type": "application/octet-stream"})
    r = c.getresponse()
    r.read()
    assert r.status == 201, r.status
    return d, len(data)


def push_image(port, repo, tag, layers):
    descs = [push_blob(port, repo, l) for l in layers]
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [d for d, _ in descs]}}).encode()
    cd, cs = push_blob(port, repo, cfg)
    m = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": s} for d, s in descs],
    }).encode()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    c.request("PUT", f"/v2/{repo}/manifests/{tag}", body=m, headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
    r = c.getresponse()
    r.read()
    assert r.status == 201, r.status
    return [d for d, _ in descs] + [cd]


def get(port, path, accept=None):
    """(status, sha256 of the body, seconds to the first byte)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    t = time.time()
    c.request("GET", path, headers={"Accept": accept} if accept else {})
    r = c.getresponse()
    first = None
    h = hashlib.sha256()
    try:
        while True:
            chunk = r.read(1 << 20)
            if first is None:
                first = time.time() - t
            if not chunk:
                break
            h.update(chunk)
    except (http.client.IncompleteRead, OSError):
        return r.status, None, first
    return r.status, "sha256:" + h.hexdigest(), first


def pull(port, repo, tag):
    accept = "application/vnd.oci.image.manifest.v1+json"
    st, _, _ = get(port, f"/v2/{repo}/manifests/{tag}", accept)
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    c.request("GET", f"/v2/{repo}/manifests/{tag}", headers={"Accept": accept})
    m = json.loads(c.getresponse().read())
    blobs = [l["digest"] for l in m["layers"]] + [m["config"]["digest"]]
    with cf.ThreadPoolExecutor(4) as ex:
        results = list(ex.map(lambda d: get(port, f"/v2/{repo}/blobs/{d}"), blobs))
    ok = st == 200 and all(s == 200 and h == d for (s, h, _), d in zip(results, blobs))
    return ok


def cpu(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def upstream_gets(log, repo, digest):
    """GETs of a blob in the upstream's access log (registry:2 writes one combined-format line each)."""
    with open(log) as f:
        return f.read().count(f'"GET /v2/{repo}/blobs/{digest} ')


def main():
    if not os.access(BERTH, os.X_OK):
        sys.exit(f"{BERTH} missing: cargo build --release")
    work = tempfile.mkdtemp(prefix="berth-proxy-bench.")
    procs = []
    try:
        up_port = free_port()
        up, up_log = start(["docker-registry", "serve"], config(up_port, f"{work}/up"), work, "upstream")
        procs.append(up)
        wait_up(up_port, up, up_log)
        layers = [os.urandom(LAYER_MIB << 20) for _ in range(LAYERS)]
        push_image(up_port, "library/app", "1", layers)
        cold = [os.urandom(LAYER_MIB << 20) for _ in range(2)]
        cold_digests = [push_blob(up_port, "library/app", b)[0] for b in cold]
        push_image(up_port, "library/app", "2", [os.urandom(1 << 20)])
        proxy = f"proxy:\n  remoteurl: http://127.0.0.1:{up_port}\n"
        caches = {}
        for i, (name, cmd) in enumerate([("berth", [BERTH, "serve"]), ("registry:2", ["docker-registry", "serve"])]):
            port = free_port()
            p, log = start(cmd, config(port, f"{work}/{i}", proxy, accesslog=False), work, f"cache{i}")
            procs.append(p)
            wait_up(port, p, log)
            caches[name] = (port, p)
        rows = {}
        for i, (name, (port, p)) in enumerate(caches.items()):
            c0 = cpu(p.pid)
            t = time.time()
            ok1 = pull(port, "library/app", "1")
            p1 = time.time() - t
            t = time.time()
            ok2 = pull(port, "library/app", "1")
            p2 = time.time() - t
            d = cold_digests[i]
            before = upstream_gets(up_log, "library/app", d)
            t = time.time()
            with cf.ThreadPoolExecutor(CLIENTS) as ex:
                res = list(ex.map(lambda _: get(port, f"/v2/library/app/blobs/{d}"), range(CLIENTS)))
            p3 = time.time() - t
            gets = upstream_gets(up_log, "library/app", d) - before
            right = sum(1 for s, h, _ in res if s == 200 and h == d)
            ttfb = statistics.median(f for _, _, f in res if f is not None)
            cpu_s = cpu(p.pid) - c0
            rows[name] = dict(p1=p1, ok1=ok1, p2=p2, ok2=ok2, p3=p3, gets=gets, right=right, ttfb=ttfb, cpu=cpu_s)
        up.terminate()
        up.wait()
        for name, (port, p) in caches.items():
            rows[name]["cached_down"] = get(port, "/v2/library/app/manifests/1", "application/vnd.oci.image.manifest.v1+json")[0]
            rows[name]["uncached_down"] = get(port, "/v2/library/app/manifests/2", "application/vnd.oci.image.manifest.v1+json")[0]
        b, r = rows["berth"], rows["registry:2"]
        size = LAYERS * LAYER_MIB
        print(f"pull-through cache, {LAYERS} layers of {LAYER_MIB} MiB, upstream docker-registry 2.8.2, 127.0.0.1")
        print(f"{'':44}{'berth':>12}{'registry:2':>12}{'berth x':>10}")
        def line(label, bv, rv, better_low=True, fmt="{:.2f}"):
            ratio = (rv / bv if better_low else bv / rv) if bv and rv else float("nan")
            print(f"{label:44}{fmt.format(bv):>12}{fmt.format(rv):>12}{ratio:>10.2f}")
        line(f"P1 cold pull of {size} MiB, s", b["p1"], r["p1"])
        line("P2 warm pull, s", b["p2"], r["p2"])
        line(f"P3 {CLIENTS} clients, one cold {LAYER_MIB} MiB blob, s", b["p3"], r["p3"])
        line("P3 median time to first byte, s", b["ttfb"], r["ttfb"], fmt="{:.3f}")
        line("P3 upstream GETs of that blob", b["gets"], r["gets"], fmt="{:.0f}")
        print(f"{'P3 clients with the right bytes':44}{b['right']:>12}{r['right']:>12}")
        line("CPU seconds, P1 to P3", b["cpu"], r["cpu"])
        print(f"{'pulls correct (P1, P2)':44}{str(b['ok1'] and b['ok2']):>12}{str(r['ok1'] and r['ok2']):>12}")
        print(f"{'P4 upstream down: cached tag / uncached':44}{str(b['cached_down']) + '/' + str(b['uncached_down']):>12}{str(r['cached_down']) + '/' + str(r['uncached_down']):>12}")
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        if not os.environ.get("KEEP"):
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"work directory kept: {work}")


if __name__ == "__main__":
    main()
