#!/usr/bin/python3
"""Summaries for tools/bench/pybench.sh and pymem.sh (stdlib only).

  pysummarize.py table RUNS.tsv CASES.tsv   -> medians per case, ratios gateway / named peers
  pysummarize.py profile FILE...            -> top functions of cProfile/pstats dumps
  pysummarize.py mem MEM.tsv                -> pymem.sh table (MiB) and the preload PSS ratio
  pysummarize.py proc-snap                  -> pid, pgid, utime+stime ticks, comm of every process
  pysummarize.py proc-top A B PGID SECS TCK -> top CPU users between two snapshots, PGID and wrk
                                               left out (keyed by pid: a kworker's comm changes)
"""
import csv
import sys

from summarize import med, num, proc_snap  # shared with bench.sh's summary

# c64 req/s, CPU us/req and c1 req/s of the peers in the anchor baselines (PIN=split,
# /work/shared/reference/anchor-baselines.md), to tell a noisy run from a slow server.
ANCHOR = {
    "gunicorn_sync_w2": (9644, 103.1, 8169),
    "gunicorn_gthread_w2t4": (11872, 84.2, 7173),
    "gunicorn_uvicornworker_w2": (56223, 17.7, 11142),
    "uvicorn_w2": (56312, 17.7, 10697),
    "uwsgi_http_ka_unix_p2": (21478, 45.9, 10271),
    "uwsgi_httpsocket_p2": (22974, 23.9, 9197),
    "flask_gunicorn_sync_w2": (5365, 185.8, 5071),
    "fastapi_uvicorn_w2": (28360, 35.2, 7982),
}

# (label, gateway case, peer case)
RATIOS = [
    ("raw WSGI", "gateway_wsgi_w2", "uwsgi_http_ka_unix_p2"),
    ("raw WSGI", "gateway_wsgi_w2", "gunicorn_gthread_w2t4"),
    ("raw WSGI", "gateway_wsgi_w2", "gunicorn_sync_w2"),
    ("raw WSGI", "gateway_wsgi_w2", "uwsgi_httpsocket_p2"),
    ("raw ASGI", "gateway_asgi_w2", "uvicorn_w2"),
    ("raw ASGI", "gateway_asgi_w2", "gunicorn_uvicornworker_w2"),
    ("Flask", "flask_gateway_w2", "flask_gunicorn_sync_w2"),
    ("FastAPI", "fastapi_gateway_w2", "fastapi_uvicorn_w2"),
]




def fmt(v, d, suffix=""):
    return "-" if v is None else f"{v:,.{d}f}{suffix}"


def table(runs_path, cases_path):
    runs = list(csv.DictReader(open(runs_path), delimiter="\t"))
    cases = list(csv.DictReader(open(cases_path), delimiter="\t"))
    order = [c["case"] for c in sorted(cases, key=lambda c: int(c["port"]))]   # the case table's order
    info = {c["case"]: c for c in cases}
    m = {}
    for case in order:
        for mode in ("c64", "c1"):
            sel = [r for r in runs if r["case"] == case and r["mode"] == mode]
            v = {k: med(num(r[k]) for r in sel)
                 for k in ("rps", "p50_us", "p99_us", "cpu_us_per_req", "srv_cpu_pct", "wrk_cpu_pct", "softirq_pct")}
            v["n"] = len(sel)
            v["other_max"] = max((num(r["other_cpu_pct"]) or 0 for r in sel), default=None)
            rps = [num(r["rps"]) for r in sel if num(r["rps"]) is not None]
            v["range"] = (min(rps), max(rps)) if rps else None
            v["bad"] = sum(1 for r in sel if r["non2xx"] != "0" or r["alive_after"] != "yes"
                           or r["nprocs_before"] != r["nprocs_after"] or r["requests"] in ("0", "")
                           or (r["sockerr"] != "0" and r["keepalive"] == "yes"))
            m[case, mode] = v
    nr = max((v["n"] for v in m.values()), default=0)
    print(f"Medians of {nr} round(s): wrk -t1 on CPU 1, every server process on CPU 0; "
          "latency in ms; CPU = server process group utime+stime / requests")
    hdr = (f"{'case':26} {'status':13} {'c64 req/s':>10} {'p50':>7} {'p99':>7} {'us/req':>7} "
           f"{'c1 req/s':>9} {'p50':>7} {'p99':>7} {'us/req':>7} {'KA':>3} {'procs':>5} "
           f"{'srv%':>4} {'wrk%':>4} {'sirq':>4} {'oth%':>4} {'c64 req/s range':>17} {'bad':>3}  anchor c64/us/c1")
    print(hdr)
    print("-" * len(hdr))
    for case in order:
        st = info[case]["status"]
        a, b = m[case, "c64"], m[case, "c1"]
        if st != "ok" or not a["n"]:
            print(f"{case:26} {st if st != 'ok' else 'no runs':13}  {info[case].get('note', '')}")
            continue
        rng = f"{a['range'][0]:,.0f}-{a['range'][1]:,.0f}" if a["range"] else "-"
        oth = max(x for x in (a["other_max"], b["other_max"], 0) if x is not None)
        anc = ANCHOR.get(case)
        anc_s = f"{anc[0]:,} / {anc[1]} / {anc[2]:,}" if anc else ""
        ms = lambda us: None if us is None else us / 1000.0
        print(f"{case:26} {st:13} {fmt(a['rps'], 0):>10} {fmt(ms(a['p50_us']), 3):>7} {fmt(ms(a['p99_us']), 2):>7} "
              f"{fmt(a['cpu_us_per_req'], 1):>7} {fmt(b['rps'], 0):>9} {fmt(ms(b['p50_us']), 3):>7} "
              f"{fmt(ms(b['p99_us']), 3):>7} {fmt(b['cpu_us_per_req'], 1):>7} {info[case]['keepalive']:>3} "
              f"{info[case]['nprocs']:>5} {fmt(a['srv_cpu_pct'], 0):>4} {fmt(a['wrk_cpu_pct'], 0):>4} {fmt(a['softirq_pct'], 0):>4} {oth:>4.0f} "
              f"{rng:>17} {a['bad'] + b['bad']:>3}  {anc_s}")
    print()
    print("Ratios gateway / peer (req/s: above 1.00x is better for the gateway; CPU us/req and p50:"
          " below 1.00x is better)")
    print(f"  {'':9} {'gateway case':20} {'peer':26} {'c64 req/s':>9} {'c64 CPU':>8} {'c1 req/s':>9} {'c1 p50':>7}"
          f"  {'paired c64 req/s (range)':>26}")
    r = lambda x, y: None if x is None or not y else x / y

    def paired(gw, peer):
        # The same round's two runs ran minutes apart at most: their ratio
        # drifts less with the machine than the ratio of the medians.
        by = {(x["case"], x["round"]): num(x["rps"]) for x in runs if x["mode"] == "c64"}
        rs = [by[gw, rd] / by[peer, rd] for (c, rd) in by
              if c == gw and by.get((peer, rd)) and by[gw, rd] is not None]
        if not rs:
            return "-"
        return f"{med(rs):.2f}x ({min(rs):.2f}-{max(rs):.2f}, n={len(rs)})"
    for label, gw, peer in RATIOS:
        if gw not in info or peer not in info:
            continue
        bad = [c for c in (gw, peer) if info[c]["status"] != "ok" or not m[c, "c64"]["n"]]
        if bad:
            print(f"  {label:9} {gw:20} {peer:26} n/a: {', '.join(c + ' ' + info[c]['status'] for c in bad)}")
            continue
        g64, p64, g1, p1 = m[gw, "c64"], m[peer, "c64"], m[gw, "c1"], m[peer, "c1"]
        print(f"  {label:9} {gw:20} {peer:26} {fmt(r(g64['rps'], p64['rps']), 2, 'x'):>9} "
              f"{fmt(r(g64['cpu_us_per_req'], p64['cpu_us_per_req']), 2, 'x'):>8} "
              f"{fmt(r(g1['rps'], p1['rps']), 2, 'x'):>9} {fmt(r(g1['p50_us'], p1['p50_us']), 2, 'x'):>7}"
              f"  {paired(gw, peer):>26}")
    print()
    print("paired: the median over rounds of that round's gateway/peer c64 req/s (they run back to back).")
    print("KA: the server kept a curl connection alive. gunicorn sync and uWSGI --http-socket close every")
    print("connection (wrk counts a read error per request on uWSGI; p50 then leaves out the reconnect).")
    print("srv%/wrk%: CPU of the server group / of wrk in % of one core (near 100: that side is the limit);")
    print("sirq: irq+softirq time (mostly loopback TCP), machine-wide, % of one core: not in any process's CPU.")
    print("oth%: busiest run's user+system CPU of anything else (> ~10: the run was disturbed). CPU is sampled in")
    print("clock ticks (10 ms): short runs give coarse us/req. 'anchor' = the same peer in")
    print("/work/shared/reference/anchor-baselines.md (c64 req/s / us per req / c1 req/s).")
    if any(v["bad"] for v in m.values()):
        print("WARNING: some runs had non-2xx responses, socket errors on a keep-alive server, a dead server"
              " or a changed process count (see problems.txt).")


def profile(paths, top=30):
    import pstats
    ok = []
    for p in paths:
        try:
            pstats.Stats(p)
            ok.append(p)
        except Exception as e:  # not a pstats dump (a text report, a directory ...)
            print(f"{p}: not a pstats file ({e.__class__.__name__})")
    if not ok:
        return
    st = pstats.Stats(*ok)
    print(f"cProfile of {len(ok)} worker dump(s), by internal time:")
    st.sort_stats("tottime").print_stats(top)
    print("by cumulative time:")
    st.sort_stats("cumulative").print_stats(top)


def mem(path):
    rows = list(csv.DictReader(open(path), delimiter="\t"))
    print("| case | status | procs | data built | PSS idle | USS idle | RSS idle | PSS after | USS after "
          "| RSS after | KSM merged after | requests per worker |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        if not r["pss_after"]:
            print(f"| {r['case']} | {r['status']} | | | | | | | | | | |")
            continue
        print(f"| {r['case']} | {r['status']} | {r['nprocs']} | {r['imports']}x | {r['pss_idle']} | {r['uss_idle']} | "
              f"{r['rss_idle']} | {r['pss_after']} | {r['uss_after']} | {r['rss_after']} | {r['ksm_after']} "
              f"| {r['client']} |")
    pss = {r["case"]: num(r["pss_after"]) for r in rows if r["status"] == "ok"}
    base = pss.get("gunicorn_preload")
    print()
    print("MiB, summed over every process of the server's group (master, zygote if any, 4 workers), from")
    print("/proc/PID/smaps_rollup; 'after' = after the requests (each reads all of the data within 64).")
    print("'data built' = how many processes imported the app (1 when preload works, 4 without it).")
    for gw in ("gateway_preload", "gateway_preload_ksm", "gateway_nopreload"):
        if gw in pss and base:
            print(f"PSS after: {gw} / gunicorn_preload = {pss[gw]:.0f} / {base:.0f} = {pss[gw] / base:.2f}x")
        elif base:
            st = next((r["status"] for r in rows if r["case"] == gw), "not run")
            print(f"PSS after: {gw} / gunicorn_preload = n/a ({gw}: {st})")



def proc_top(before, after, pgid, seconds, tck, top=3):
    def load(p):
        return {r[0]: (r[1], int(r[2]), r[3]) for r in (l.rstrip("\n").split("\t") for l in open(p)) if len(r) == 4}
    a, b = load(before), load(after)
    use = []
    for pid, (pg, t, comm) in b.items():
        if pg == pgid or comm in ("wrk", "taskset", "timeout"):
            continue
        d = t - a.get(pid, (pg, 0, comm))[1]   # a process started during the run counts from 0
        if d > 0:
            use.append((d, pid, comm))
    use.sort(reverse=True)
    print(" ".join(f"{c}[{p}]:{d / float(tck) / float(seconds) * 100:.0f}%" for d, p, c in use[:top]) or "-")


if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "table" and len(sys.argv) == 4:
        table(sys.argv[2], sys.argv[3])
    elif cmd == "profile" and len(sys.argv) > 2:
        profile(sys.argv[2:])
    elif cmd == "mem" and len(sys.argv) == 3:
        mem(sys.argv[2])
    elif cmd == "proc-snap":
        proc_snap()
    elif cmd == "proc-top" and len(sys.argv) == 7:
        proc_top(*sys.argv[2:7])
    else:
        print(__doc__)
        sys.exit(2)
