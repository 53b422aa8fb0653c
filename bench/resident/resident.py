#!/usr/bin/env python3
"""Which pages of a running Go binary are resident, by ELF section and by package.

usage: resident.py PID BINARY   (as root; BINARY is the path the process runs)

Reads /proc/PID/maps and /proc/PID/pagemap for the mappings of BINARY and
attributes each resident page to the ELF sections (readelf -SW) and to the
symbols (go tool nm -size) it overlaps. BENCHMARKS.md section 3 used it to
find why an idle agent kept 36 MiB of its binary resident.
"""
import bisect, collections, re, struct, subprocess, sys

pid, binpath = sys.argv[1], sys.argv[2]

maps = []
for line in open(f"/proc/{pid}/maps"):
    p = line.split()
    if len(p) >= 6 and p[5] == binpath:
        a, b = (int(x, 16) for x in p[0].split("-"))
        maps.append((a, b))

resident = []
with open(f"/proc/{pid}/pagemap", "rb") as f:
    for a, b in maps:
        f.seek(a // 4096 * 8)
        data = f.read((b - a) // 4096 * 8)
        for i in range((b - a) // 4096):
            if struct.unpack_from("<Q", data, i * 8)[0] >> 63:
                resident.append(a + i * 4096)
print(f"resident pages of {binpath}: {len(resident)} = {len(resident) * 4 / 1024:.1f} MiB")

sections = []
out = subprocess.run(["readelf", "-SW", binpath], capture_output=True, text=True, check=True).stdout
for line in out.splitlines():
    m = re.match(r"\s*\[\s*\d+\]\s+(\S+)\s+\S+\s+([0-9a-f]+)\s+[0-9a-f]+\s+([0-9a-f]+)", line)
    if m and int(m.group(2), 16):
        sections.append((int(m.group(2), 16), int(m.group(3), 16), m.group(1)))
by_section = collections.Counter()
for pg in resident:
    for a, size, name in sections:
        if a <= pg < a + size or pg <= a < pg + 4096:
            by_section[name] += 1
            break
print("\nby section (resident of size):")
for name, n in by_section.most_common():
    size = next(s for a, s, nn in sections if nn == name)
    print(f"{n * 4 / 1024:8.2f} MiB  {name} of {size / 1048576:.1f} MiB")

syms = []
out = subprocess.run(["go", "tool", "nm", "-size", "-sort", "address", binpath], capture_output=True, text=True, check=True).stdout
for line in out.splitlines():
    p = line.split(None, 3)
    try:
        syms.append((int(p[0], 16), int(p[1]), p[3]))
    except (IndexError, ValueError):
        pass
addrs = [s[0] for s in syms]


def package(sym):
    sym = re.sub(r"\(.*", "", sym)
    if sym.startswith(("go:", "type:")):
        return sym.split(".")[0]
    m = re.match(r"^(.*?/?[^/.]*)\.[^/]*$", sym)
    return "/".join((m.group(1) if m else sym).split("/")[:4])


by_package = collections.Counter()
for pg in resident:
    i = max(bisect.bisect_right(addrs, pg) - 1, 0)
    while i < len(syms) and syms[i][0] < pg + 4096:
        a, size, name = syms[i]
        lo, hi = max(a, pg), min(a + max(size, 1), pg + 4096)
        if hi > lo:
            by_package[package(name)] += hi - lo
        i += 1
print("\nby package (bytes of symbols on resident pages; pclntab and strings are not symbols):")
for name, n in by_package.most_common(25):
    print(f"{n / 1048576:8.2f} MiB  {name}")
