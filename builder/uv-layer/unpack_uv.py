"""Unpacks uv's binary from the one wheel in WHEEL_DIR to OUT_DIR/uv (mode 755): the fast builder's layer."""

import pathlib
import sys
import zipfile

wheel_dir, out_dir = (pathlib.Path(a) for a in sys.argv[1:3])
(wheel,) = wheel_dir.glob("uv-*.whl")
out_dir.mkdir(parents=True, exist_ok=True)
with zipfile.ZipFile(wheel) as z:
    (name,) = [n for n in z.namelist() if n.endswith(".data/scripts/uv")]
    target = out_dir / "uv"
    target.write_bytes(z.read(name))
target.chmod(0o755)
print(f"{wheel.name}: {name} -> {target} ({target.stat().st_size} bytes)")
