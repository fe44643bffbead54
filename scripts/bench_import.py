#!/usr/bin/env python3
"""Cold import time of unpacked layers, as Lambda imports them (issue 21 item 5).

Used by scripts/bench.sh (not a test: it prints figures and asserts nothing). Each layer is a folder into which
its zip was unpacked with `unzip` (entry dates kept, as Lambda's unpacking keeps them) and then made read-only
(`chmod -R a-w`). Every run starts a fresh interpreter with the environment of `env -i` plus
`PYTHONDONTWRITEBYTECODE=1` and `PYTHONPATH=<site>` (on Lambda: /opt/python/lib/pythonX.Y/site-packages: as
root, with util-linux's unshare, each run gets the layer bind-mounted at /opt in a private mount namespace, so
the paths are Lambda's; otherwise it imports from where it was unpacked), from `/`, and, when this runs as root
(which ignores permissions), as user 65534 through `setpriv`, so that
the interpreter can't write a `__pycache__` into the layer: a module without valid bytecode is compiled from
source on every run, as on Lambda's read-only /opt.

For each layer, in this order:
  1. proof that the importing user can't write into the layer (a create that must fail);
  2. one run under `python -v`: how many of the layer's modules were loaded from its bytecode ("# X matches
     Y"), how many had bytecode that was rejected ("bytecode is stale", a hash mismatch), how many were compiled
     from source ("# code object from <source>"), and how many extension modules were loaded; this proves the
     bytecode is valid, not merely present;
  3. one warm-up run (page cache: the files are read from memory afterwards, for every layer alike).
Then RUNS rounds, each running every layer once (alternating; the order rotates by one each round), wall time
of each run (time.perf_counter around subprocess.run; includes interpreter start-up and setpriv's exec). At the
end: the layers' files must be unchanged (names, sizes, dates), and how many `__pycache__` folders each holds.

Prints one block: per layer the zip size, the unzipped size (sum of regular file sizes), .pyc count, median and
every run, the -v counts, and the ratio baseline/layer; then the target line (informational).

usage: bench_import.py --python PY --site REL --statement STMT --runs N [--baseline NAME] [--target NAME]
                       --layer NAME DIR ZIP [--layer NAME DIR ZIP ...]      (ZIP may be - when there is none)
"""

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

NOBODY = 65534


def user_prefix():
    """The command prefix that drops to user 65534 when running as root (root ignores the read-only bits)."""
    if os.geteuid() != 0:
        return [], f"uid {os.geteuid()}"
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        sys.exit("bench_import: running as root needs setpriv (util-linux) to import as user 65534")
    return [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"], f"uid {NOBODY} via setpriv"


def opt_prefix(layer_dir):
    """As root with util-linux's unshare: the command prefix that runs the import in a private mount namespace
    with the layer bind-mounted at /opt, where Lambda puts it, so that the file names recorded in the bytecode
    (/opt/python/lib/pythonX.Y/site-packages/...) are the real ones, as on Lambda: Python then has no file name
    to fix up in the code objects it loads. Nothing outside the namespace sees the mount."""
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
            'mount --bind "$0" /opt && exec "$@"', layer_dir]


def can_mount_at_opt():
    if os.geteuid() != 0 or shutil.which("unshare") is None or not os.path.isdir("/opt"):
        return False
    proc = subprocess.run(opt_prefix("/") + ["true"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc.returncode == 0


def env_for(site):
    # What `env -i PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=…` gives: nothing inherited.
    return {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": site}


def listing(root):
    """Every entry under root with its size and modification time, and the number of __pycache__ folders."""
    entries, pycache = [], 0
    for top, dirs, files in os.walk(root):
        pycache += dirs.count("__pycache__")
        for name in files:
            st = os.lstat(os.path.join(top, name))
            entries.append((os.path.join(top, name), st.st_size, st.st_mtime_ns))
        for name in dirs:
            entries.append((os.path.join(top, name) + "/", 0, 0))
    entries.sort()
    return entries, pycache


def sizes(root):
    total = pyc = 0
    for top, _, files in os.walk(root):
        for name in files:
            path = os.path.join(top, name)
            if os.path.isfile(path) and not os.path.islink(path):
                total += os.path.getsize(path)
                pyc += name.endswith(".pyc")
    return total, pyc


def timed(statement):
    """The statement, printing the seconds it took inside the interpreter (start-up excluded)."""
    return f"import time as _t\n_s = _t.perf_counter()\n{statement}\nprint(_t.perf_counter() - _s)"


def run(cmd, site, check=True):
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env_for(site), cwd="/", stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - start
    if check and proc.returncode != 0:
        sys.exit(f"bench_import: {cmd!r} failed ({proc.returncode}):\n"
                 + proc.stderr.decode(errors="replace")[-3000:])
    return elapsed, proc


def verbose_counts(prefix, python, statement, site):
    """Counts, from `python -v`, how the layer's modules (paths under site) were loaded."""
    _, proc = run(prefix + [python, "-v", "-c", statement], site)
    counts = {"bytecode": 0, "stale": 0, "source": 0, "extension": 0}
    root = site.rstrip("/") + "/"
    for line in proc.stderr.decode(errors="replace").splitlines():
        if not line.startswith("# "):
            continue
        # "# /l/pkg/__pycache__/m.cpython-311.pyc matches /l/pkg/m.py": the bytecode was valid and used.
        m = re.match(r"# (\S+\.pyc) matches (\S+)$", line)
        if m and m.group(2).startswith(root):
            counts["bytecode"] += 1
            continue
        # "# code object from /l/pkg/m.py" (no quotes): compiled from the source; from '…pyc' (quoted): bytecode.
        m = re.match(r"# code object from (/\S+)$", line)
        if m and m.group(1).startswith(root):
            counts["source"] += 1
            continue
        # "# bytecode is stale for 'm'" (timestamp) or "# hash in bytecode doesn't match hash of source 'm'".
        if "bytecode is stale" in line or "hash in bytecode doesn't match" in line:
            counts["stale"] += 1
    counts["extension"] = len(re.findall(r"^# extension module .* loaded from '" + re.escape(root),
                                         proc.stderr.decode(errors="replace"), re.M))
    return counts


def cannot_write(prefix, python, site):
    """True when the importing user gets an error creating a file (and a __pycache__ folder) in the layer."""
    probe = ("import os, sys\n"
             "for p in (os.path.join(sys.argv[1], 'layerforge-probe'), os.path.join(sys.argv[1], '__pycache__')):\n"
             "    try:\n"
             "        os.mkdir(p)\n"
             "    except OSError:\n"
             "        continue\n"
             "    os.rmdir(p)\n"
             "    sys.exit(1)\n")
    _, proc = run(prefix + [python, "-c", probe, site], site, check=False)
    return proc.returncode == 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--python", required=True)
    ap.add_argument("--site", required=True, help="site-packages relative to each layer's folder")
    ap.add_argument("--statement", required=True)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--baseline", help="the layer the ratios are against (default: the first)")
    ap.add_argument("--target", help="the layer of the target line")
    ap.add_argument("--layer", nargs=3, action="append", metavar=("NAME", "DIR", "ZIP"), required=True)
    args = ap.parse_args()

    user, who = user_prefix()
    at_opt = can_mount_at_opt()
    where = "at /opt (a private mount namespace per run)" if at_opt else "where it was unpacked"
    layers = [{"name": n, "dir": d, "zip": None if z == "-" else z,
               "site": os.path.join(d, args.site)} for n, d, z in args.layer]
    for layer in layers:
        if not os.path.isdir(layer["site"]):
            sys.exit(f"bench_import: no {layer['site']}")
        # What the importer runs, and the site-packages path it sees.
        layer["prefix"] = (opt_prefix(layer["dir"]) if at_opt else []) + user
        layer["seen"] = os.path.join("/opt", args.site) if at_opt else layer["site"]
        layer["before"], layer["pycache"] = listing(layer["dir"])
        layer["unzipped"], layer["pyc"] = sizes(layer["dir"])
        layer["readonly"] = cannot_write(layer["prefix"], args.python, layer["seen"])
        layer["counts"] = verbose_counts(layer["prefix"], args.python, args.statement, layer["seen"])
        run(layer["prefix"] + [args.python, "-c", args.statement], layer["seen"])  # warm-up
        layer["times"] = []
        layer["imports"] = []

    for r in range(args.runs):
        for i in range(len(layers)):
            layer = layers[(i + r) % len(layers)]
            elapsed, proc = run(layer["prefix"] + [args.python, "-c", timed(args.statement)], layer["seen"])
            layer["times"].append(elapsed)
            layer["imports"].append(float(proc.stdout.decode().strip().splitlines()[-1]))

    base = next((l for l in layers if l["name"] == args.baseline), layers[0])
    for layer in layers:
        layer["median"] = statistics.median(layer["times"])
        layer["import_median"] = statistics.median(layer["imports"])
    width = max(len(l["name"]) for l in layers)
    print(f"  each layer {where}, importing as {who}, env -i + PYTHONDONTWRITEBYTECODE=1 + PYTHONPATH; one -v run and one warm-up per "
          f"layer, then {args.runs} alternating runs (order rotated each round); seconds: the import inside the interpreter (time.perf_counter around the statement) and the whole process")
    for layer in layers:
        zip_size = f"{os.path.getsize(layer['zip'])} B zip" if layer["zip"] else "not zipped"
        c = layer["counts"]
        runs = " ".join(f"{t:.3f}" for t in layer["times"])
        imports = " ".join(f"{t:.3f}" for t in layer["imports"])
        print(f"  {layer['name']:<{width}}  import median {layer['import_median']:.3f} s, min "
              f"{min(layer['imports']):.3f} s, ratio {base['name']}/this "
              f"{base['import_median'] / layer['import_median']:.2f}x  [runs: {imports}]")
        print(f"  {'':<{width}}  process wall median {layer['median']:.3f} s (start-up included), ratio "
              f"{base['median'] / layer['median']:.2f}x  [runs: {runs}]")
        print(f"  {'':<{width}}  {zip_size}, {layer['unzipped']} B unzipped, {layer['pyc']} .pyc; modules: "
              f"{c['bytecode']} from bytecode, {c['source']} compiled from source, {c['stale']} bytecode rejected, "
              f"{c['extension']} extension modules")
        after, pycache = listing(layer["dir"])
        state = "unchanged" if after == layer["before"] else "CHANGED by the runs"
        ro = "read-only to the importer" if layer["readonly"] else "WRITABLE by the importer"
        print(f"  {'':<{width}}  {ro}; files {state}; {pycache} __pycache__ folders "
              f"(before: {layer['pycache']})")
    if args.target:
        target = next(l for l in layers if l["name"] == args.target)
        ratio = base["import_median"] / target["import_median"]
        verdict = "PASS" if ratio >= 1.0 else "MISS"
        print(f"  target (import medians): {target['name']} (bytecode) no slower than the {base['name']}: ratio "
              f"{base['name']}/{target['name']} >= 1.00: {ratio:.2f}x, {verdict} (informational, nothing asserted)")


if __name__ == "__main__":
    main()
