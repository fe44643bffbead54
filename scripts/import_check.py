"""The local pipeline's import check (scripts/run-local.sh step 4, tests/integration/import_check.rs).

Usage: import_check.py SITE_PACKAGES ARCH ONLY_LIST

Imports the top-level modules of every distribution installed in a layer's site-packages, found from the
distribution's own files (top_level.txt, else the paths in its RECORD), never guessed from its name (PyYAML
provides `yaml`, python-dateutil `dateutil`, beautifulsoup4 `bs4`). A module with compiled files for another
architecture than this host's is reported, not imported: layer-builder already refused any ELF file of the wrong
machine or above the runtime's glibc before the upload. ONLY_LIST=1 (no Python of the runtime here) lists them.
"""
import glob, importlib, os, platform, sys

site, arch, only_list = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
host = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine().lower())

def modules(dist):
    """Top-level modules of one installed distribution: top_level.txt, else the paths of its RECORD."""
    top = os.path.join(dist, "top_level.txt")
    if os.path.exists(top):
        return {line.strip() for line in open(top) if line.strip()}
    names = set()
    record = os.path.join(dist, "RECORD")
    for line in open(record) if os.path.exists(record) else []:
        path = line.split(",")[0]
        first = path.split("/")[0]
        if first.endswith((".dist-info", ".data")) or first in ("..", "__pycache__", "bin"):
            continue
        if "/" in path:
            names.add(first)
        elif first.endswith(".py"):
            names.add(first[:-3])
        elif ".cpython-" in first or first.endswith(".abi3.so"):
            names.add(first.split(".")[0])
    return names

sys.path.insert(0, site)
found = 0
for dist in sorted(glob.glob(os.path.join(site, "*.dist-info"))):
    for name in sorted(modules(dist)):
        if name.startswith("_") and not os.path.exists(os.path.join(site, name)):
            continue
        found += 1
        here = os.path.join(site, name)
        compiled = glob.glob(os.path.join(here, "**", "*.so"), recursive=True) + glob.glob(here + ".*.so")
        label = os.path.basename(dist)[: -len(".dist-info")]
        if only_list:
            print(f"  {name:<14} ({label})")
        elif compiled and arch != host:
            print(
                f"  {name:<14} ({label}) has compiled modules for {arch}; this host is {host}: not imported "
                "(layer-builder verified their machine and glibc)"
            )
        else:
            m = importlib.import_module(name)
            where = os.path.relpath(getattr(m, "__file__", None) or here, site)
            print(f"  import {name:<14} ok  ({label}, {where})")
if not found:
    sys.exit("no installed distribution in the layer")
