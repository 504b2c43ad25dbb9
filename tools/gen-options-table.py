#!/usr/bin/python3
"""Print the README's options table from `build/gateway --help`, which is
itself generated from the option table in gateway/config.c (one place for
every default). Usage: tools/gen-options-table.py [path/to/gateway]"""
import re
import subprocess
import sys

exe = sys.argv[1] if len(sys.argv) > 1 else "build/gateway"
text = subprocess.run([exe, "--help"], capture_output=True, text=True, check=True).stdout
opts = text.split("\nOPTIONS\n", 1)[1].split("\n\nSIGNALS", 1)[0]
rows, cur = [], None
for line in opts.splitlines():
    if line.startswith("    -"):
        cur = {"head": line.strip(), "help": [], "default": ""}
        rows.append(cur)
    elif cur is not None and line.startswith("        "):
        t = line.strip()
        m = re.match(r"Default: (.*)\.$", t)
        if m:
            cur["default"] = m.group(1)
        else:
            cur["help"].append(t)
print("| option | default | meaning |")
print("|---|---|---|")
for r in rows:
    helptext = " ".join(r["help"]).replace("|", "\\|")
    head = r["head"].replace("|", "\\|")
    default = ("`%s`" % r["default"]) if r["default"] else ""
    print("| `%s` | %s | %s |" % (head, default, helptext))
