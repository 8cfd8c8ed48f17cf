"""Unpack cutlass_library/source/include/{cute,cutlass} from the nvidia-cutlass wheel."""
import pathlib
import sys
import zipfile

wheel, destination = sys.argv[1], pathlib.Path(sys.argv[2])
prefix = "cutlass_library/source/include/"
with zipfile.ZipFile(wheel) as archive:
    members = [name for name in archive.namelist() if name.startswith(prefix) and not name.endswith("/")]
    if not members:
        sys.exit(f"{wheel}: no headers under {prefix}")
    for name in members:
        target = destination / name[len(prefix):]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(archive.read(name))
print(f"unpacked {len(members)} CuTe/CUTLASS headers into {destination}")
