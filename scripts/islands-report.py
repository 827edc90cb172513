#!/usr/bin/python3
"""The table, targets and plot of scripts/islands-bench from its output directory.
  islands-report.py DIR      writes DIR/results.md, DIR/results.json, DIR/val_bpb_vs_wall.png
Run names: <variant>-<link>[-r<k>]; with several repeats of a (variant, link),
the table gives medians and the range (min-max) of throughput."""
import glob, json, os, re, statistics, sys

out = sys.argv[1]
params = json.load(open(f"{out}/params.json"))
steps, H, batch = params["steps"], params["H"], params["batch_per_rank"]
tau = params.get("tau", 0)
slow_factor = params.get("slow_factor", 2)
dipacos = [f"dipaco-{t}{o}" for o in ("", "-overlap") for t in ("fp32", "bf16", "int8", "fp4") if not (o and t == "fp32")]
bases = ["dp", "diloco"] + dipacos
order = bases + [f"{v}-slow" for v in bases]   # <variant>-slow: the same with a straggler
labels = {"dp": "data-parallel (dense, all-reduce every step)", "diloco": f"DiLoCo, 1 path x 4 workers, H={H}"}
for v in dipacos:
    labels[v] = f"DiPaCo 2x2, H={H}, {v.split('-')[1]} outer" + (f", overlapped (tau={tau})" if v.endswith("overlap") else "")
for v in bases:
    labels[f"{v}-slow"] = labels[v] + f", path 0 a {slow_factor:g}x straggler"
name_re = re.compile(r"^((?:dp|diloco|" + "|".join(sorted(dipacos, key=len, reverse=True)) + r")(?:-slow)?)-(.+?)(?:-r(\d+))?$")


def load(name):
    m = name_re.match(name)
    if not m: return None
    v, link, rep = m.group(1), m.group(2), int(m.group(3) or 1)
    d = f"{out}/runs/{name}"
    try:
        summary = json.load(open(f"{d}/summary.json"))
        hosts = json.load(open(f"{out}/bytes-{name}.json"))
    except OSError:
        return None
    evals, rounds_list = [], []
    for line in open(f"{d}/metrics.jsonl"):
        rec = json.loads(line)
        if rec.get("type") == "eval": evals.append((rec["elapsed"], rec["val_bpb"], rec["step"]))
        if rec.get("type") == "round": rounds_list.append(rec)
    mt = [json.load(open(f)) for f in glob.glob(f"{out}/mpitime-{name}/rank-*.json")]
    wall = summary["wall_seconds"]
    # Training time: the run's wall time less its checkpoint writes (the last one, parallel HDF5 over
    # the link, costs seconds at a 50 ms delay and has nothing to do with the outer rounds).
    ckpt = summary.get("checkpoint_write_seconds", 0)
    train = wall - ckpt
    # Collectives and the point-to-point calls of the rings of compressed outer gradients.
    comm = (sum(m["allreduce"]["seconds"] + m["allgather"]["seconds"] + m.get("p2p", {}).get("seconds", 0)
                for m in mt) / len(mt) / wall) if mt else None
    rounds = summary.get("outer_rounds") or summary["steps"]   # data-parallel: a round is a step
    try: foreign = json.load(open(f"{out}/cpu-{name}.json"))["foreign_share_of_cores"]
    except OSError: foreign = None
    hs = hosts["hosts"]
    return {"name": name, "variant": v, "link": link, "repeat": rep, "summary": summary, "evals": evals,
            "tx": sum(h["tx_bytes"] for h in hs) / len(hs), "rx": sum(h["rx_bytes"] for h in hs) / len(hs),
            "shaping": hosts["shaping"], "comm_share": comm, "foreign": foreign, "rounds": rounds,
            "sync_share": summary["sync_seconds"] / train if v != "dp" else None,
            "tps": summary["tokens"] / train, "train_wall": train, "ckpt_seconds": ckpt, "rounds_list": rounds_list}


runs = [r for r in (load(os.path.basename(d)) for d in glob.glob(f"{out}/runs/*")) if r]
groups = {}
for r in runs: groups.setdefault((r["variant"], r["link"]), []).append(r)
links = sorted({k[1] for k in groups}, key=lambda l: (l == "none", l))


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def agg(v, l):
    g = groups.get((v, l))
    if not g: return None
    tps = [r["tps"] for r in g]
    walls = [r["summary"]["wall_seconds"] for r in g]
    # The run of median wall time stands for the group in the plot and the bpb-at-time comparisons.
    rep = sorted(g, key=lambda r: r["summary"]["wall_seconds"])[(len(g) - 1) // 2]
    return {"n": len(g), "tps": med(tps), "tps_min": min(tps), "tps_max": max(tps), "wall": med(walls),
            "tx": med([r["tx"] for r in g]), "rx": med([r["rx"] for r in g]), "comm": med([r["comm_share"] for r in g]),
            "sync": med([r["sync_share"] for r in g]), "per_round": med([r["tx"] / r["rounds"] for r in g]),
            "bpb": med([r["summary"]["val_bpb"] for r in g]), "bpbs": sorted({round(r["summary"]["val_bpb"], 4) for r in g}),
            "rep": rep, "runs": g}


def fmt_t(s): return f"{int(s // 60)}m{s % 60:04.1f}s"
def link_name(l): return "unshaped veth" if l == "none" else l.replace("+", " + ") + (" one way" if "+" in l else "")


def bpb_at(r, t):
    """val bpb of a run at wall time t (linear between evaluations; its last value after it ended)."""
    ev = r["evals"]
    if t >= ev[-1][0]: return ev[-1][1]
    for (t0, b0, _), (t1, b1, _) in zip(ev, ev[1:]):
        if t0 <= t <= t1: return b0 + (b1 - b0) * (t - t0) / max(t1 - t0, 1e-9)
    return ev[0][1]


try: version = open(f"{out}/version.txt").read().strip()
except OSError: version = "dipaco"
ns = sorted({a["n"] for a in (agg(v, l) for v in order for l in links) if a})
md = [f"{version}: 4 simulated hosts (network namespaces, one rank each, MPI over TCP), {steps} inner steps, "
      f"{4 * batch} sequences x 128 bytes per step in every variant ({batch} per rank), model d_model=128, "
      f"4 layers, 4 heads, context 128, domain shards (inputs/dipaco-2x2.ini); eval every {params['eval_every']} steps on "
      f"{params['eval_batches'] * 4 * batch} windows of 128 bytes. "
      + ("Each row: median over " + "/".join(map(str, ns)) + " run(s) (range of tokens/s in brackets)." if ns != [1] else ""), "",
      "| variant | link | tokens/s | wall time | MB over the link per host (sent / received) | MB sent per host per round "
      "| vs data-parallel | communication share | sync share | final val bpb |",
      "|---|---|---|---|---|---|---|---|---|---|"]
rows = []
for l in links:
    dp = agg("dp", l)
    for v in order:
        a = agg(v, l)
        if not a: continue
        ratio = "1x" if v == "dp" else (f"{(dp['tx'] + dp['rx']) / (a['tx'] + a['rx']):.0f}x less" if dp else "-")
        cs = f"{100 * a['comm']:.1f}%" if a["comm"] is not None else "-"
        ss = f"{100 * a['sync']:.2f}%" if a["sync"] is not None else "-"
        tps = f"{a['tps']:.0f}" + (f" ({a['tps_min']:.0f}-{a['tps_max']:.0f})" if a["n"] > 1 else "")
        md.append(f"| {labels[v]} | {link_name(l)} | {tps} | {fmt_t(a['wall'])} | {a['tx'] / 1e6:.1f} / {a['rx'] / 1e6:.1f} "
                  f"| {a['per_round'] / 1e6:.2f} | {ratio} | {cs} | {ss} | {a['bpb']:.3f} |")
        rows.append({"variant": v, "link": l, "runs": a["n"], "tokens_per_second": a["tps"], "tokens_per_second_min": a["tps_min"],
                     "tokens_per_second_max": a["tps_max"], "wall_seconds": a["wall"], "tx_bytes_per_host": a["tx"],
                     "rx_bytes_per_host": a["rx"], "comm_share": a["comm"], "sync_share": a["sync"],
                     "tx_bytes_per_host_per_round": a["per_round"], "val_bpb": a["bpb"], "val_bpb_all": a["bpbs"],
                     "per_run": [{"name": r["name"], "tokens_per_second": r["tps"], "training_seconds": r["train_wall"],
                                  "checkpoint_write_seconds": r["ckpt_seconds"],
                                  "wall_seconds": r["summary"]["wall_seconds"], "tx_bytes_per_host": r["tx"],
                                  "rx_bytes_per_host": r["rx"], "comm_share": r["comm_share"],
                                  "dipaco_sync_seconds": r["summary"].get("sync_seconds"),
                                  "dipaco_sync_share": r["summary"].get("sync_share"),
                                  "sync_bytes_per_rank": r["summary"].get("sync_bytes_per_rank"),
                                  "path_allreduce_bytes_per_rank": r["summary"].get("path_allreduce_bytes_per_rank"),
                                  "data_parallel_bytes_per_rank": r["summary"].get("data_parallel_bytes_per_rank"),
                                  "val_bpb": r["summary"]["val_bpb"], "foreign_cpu_share": r["foreign"],
                                  "shaping": r["shaping"]} for r in a["runs"]]})
md.append("")
md.append("Tokens/s and the sync share: over the training time, the wall time less the final checkpoint's write "
          f"(parallel HDF5 across the hosts; at most {max(r['ckpt_seconds'] for r in runs):.1f} s here). "
          "Communication share: time inside MPI all-reduce/all-gather and the rings' sends, receives, tests and waits "
          "(measured per rank through the MPI profiling interface, mean over ranks; includes waiting for the other ranks "
          "and the evaluation's all-reduces) over wall time. Sync share: dipaco's own time in the outer rounds (a blocking "
          "round; an overlapped round's post, its ring steps between inner steps and its completion) over wall time. "
          "Per round: sent bytes per host over the outer rounds of the run (data-parallel: over its steps). Bytes: each host's eth0 "
          "tx/rx counters before and after the run, mean over the 4 hosts (all traffic of the job: MPI, its launch, "
          "evaluation and loss all-reduces). Final val bpb: data-parallel and DiLoCo evaluate the one model on all "
          "validation windows; DiPaCo evaluates each path on the windows of its own shard (routed by domain).")
shapings = sorted({r["shaping"] for r in runs})
md.append("Shaping applied: " + "; ".join(f"`{s}`" for s in shapings) + "; "
          "net.ipv4.tcp_slow_start_after_idle=0 in every host namespace.")
fs = [r["foreign"] for r in runs if r["foreign"] is not None]
if fs:
    md.append(f"CPU used by other processes on the machine during the runs: at most {100 * max(fs):.1f}% of the cores "
              "(each run starts on an idle machine and is repeated when more than 10% was used).")
md.append("")

targets = []
for l in [l for l in links if l != "none"]:
    dp, fp32 = agg("dp", l), agg("dipaco-fp32", l)
    for v in dipacos:
        a, b = agg(v, l), agg(v, "none")
        if not a: continue
        overlapped = v.endswith("overlap")
        if b:
            f = a["tps"] / b["tps"]
            detail = f"{100 * f:.1f}% of unshaped ({a['tps']:.0f} vs {b['tps']:.0f} tok/s, medians)"
            if a["n"] > 1 or b["n"] > 1:
                ta = [round(r["tps"]) for r in sorted(a["runs"], key=lambda r: r["repeat"])]
                tb = [round(r["tps"]) for r in sorted(b["runs"], key=lambda r: r["repeat"])]
                detail += (f"; runs {'/'.join(map(str, ta))} vs {'/'.join(map(str, tb))} tok/s, "
                           f"means {100 * statistics.mean(ta) / statistics.mean(tb):.1f}%")
            sa = med([r["summary"]["sync_seconds"] for r in a["runs"]])
            sb = med([r["summary"]["sync_seconds"] for r in b["runs"]])
            detail += f"; outer syncs {sa:.2f} s vs {sb:.2f} s = {100 * (sa - sb) / a['wall']:.1f}% of wall time added by the link"
            if overlapped:
                # The last round, at train.steps, is blocking (the shared modules agree at the end): apart.
                rr = a["rep"]
                over = sum(x["sync_seconds"] for x in rr["rounds_list"][:-1]) / rr["train_wall"]
                targets.append((f"{v} over {l}: >= 97% of its unshaped throughput, sync share < 1%",
                                f >= 0.97 and a["sync"] < 0.01,
                                detail + f"; sync share {100 * a['sync']:.2f}% (median); in the run of median wall time "
                                f"{100 * rr['sync_share']:.2f}%: the overlapped rounds {100 * over:.2f}%, the last, "
                                f"blocking round {100 * (rr['sync_share'] - over):.2f}%"))
            else:
                targets.append((f"{v} over {l} within 10% of its unshaped throughput", f >= 0.9, detail))
        if dp:
            need = 1000 if overlapped else 100
            f = (dp["tx"] + dp["rx"]) / (a["tx"] + a["rx"])
            r = a["rep"]["summary"]
            outer = r["data_parallel_bytes_per_rank"] / max(r["sync_bytes_per_rank"], 1)
            targets.append((f"bytes over the link, data-parallel / {v} >= {need}x", f >= need,
                            f"{f:.0f}x (per host, tx+rx, all the job's traffic); outer rounds alone: {outer:.0f}x "
                            f"({r['sync_bytes_per_rank'] / 1e6:.2f} MB sent per rank vs {r['data_parallel_bytes_per_rank'] / 1e6:.0f} MB "
                            "for the same path's gradients in data-parallel, 4 bytes a parameter a step)"))
        if fp32 and v != "dipaco-fp32":
            d = a["bpb"] / fp32["bpb"] - 1
            targets.append((f"{v} final bpb within 1% of fp32 blocking over {l}", abs(d) <= 0.01,
                            f"{a['bpb']:.4f} vs {fp32['bpb']:.4f} ({100 * d:+.2f}%)"))
    a, b = agg("dp", l), agg("dp", "none")
    if a and b:
        f = b["tps"] / a["tps"]
        targets.append((f"data-parallel slowed >= 5x over {l}", f >= 5, f"{f:.2f}x slower ({a['tps']:.0f} vs {b['tps']:.0f} tok/s)"))
    for v in ("dipaco-fp32", "dipaco-int8-overlap"):
        a = agg(v, l)
        if dp and a:
            r = a["rep"]
            t = r["evals"][-1][0]
            d = bpb_at(dp["rep"], t)
            targets.append((f"{v} final bpb <= data-parallel's at equal wall time over {l}", r["summary"]["val_bpb"] <= d,
                            f"{r['summary']['val_bpb']:.3f} at {t:.0f} s vs data-parallel {d:.3f} at {t:.0f} s"
                            f" (data-parallel reaches {dp['rep']['summary']['val_bpb']:.3f} at {dp['rep']['evals'][-1][0]:.0f} s)"))
md.append("| target | met | measured |")
md.append("|---|---|---|")
for name, ok, detail in targets:
    md.append(f"| {name} | {'yes' if ok else 'NO'} | {detail} |")
md.append("")
md.append("![val bpb against wall time](val_bpb_vs_wall.png)")
md.append("")
try:
    cmds = [l.split(" ", 2)[2].strip() for l in open(f"{out}/commands.txt") if l.strip()]
    md.append("Made with " + ", then ".join(f"`{c}`" for c in cmds) + " (as root: network namespaces and tc need CAP_NET_ADMIN).")
except (OSError, IndexError):
    pass
text = "\n".join(md) + "\n"
open(f"{out}/results.md", "w").write(text)
json.dump({"params": params, "rows": rows, "targets": [{"target": n, "met": ok, "measured": d} for n, ok, d in targets],
           "curves": {f"{v}-{l}": agg(v, l)["rep"]["evals"] for (v, l) in groups}}, open(f"{out}/results.json", "w"), indent=1)
print(text)

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
fig, axes = plt.subplots(1, len(links), figsize=(6.5 * len(links), 4.5), sharey=True, squeeze=False)
colors = {"dp": "tab:red", "diloco": "tab:orange", "dipaco-fp32": "tab:blue", "dipaco-bf16": "tab:green",
          "dipaco-int8": "tab:purple", "dipaco-fp4": "tab:brown", "dipaco-bf16-overlap": "tab:green",
          "dipaco-int8-overlap": "tab:purple", "dipaco-fp4-overlap": "tab:brown"}
styles = {v: "--" for v in dipacos if v.endswith("overlap")}
for v in bases:
    colors[f"{v}-slow"] = colors[v]
    styles[f"{v}-slow"] = ":"
for ax, l in zip(axes[0], links):
    for v in order:
        a = agg(v, l)
        if not a: continue
        ev = a["rep"]["evals"]
        ax.plot([e[0] for e in ev], [e[1] for e in ev], styles.get(v, "-"), marker="o", ms=3, color=colors[v], label=labels[v])
    # Zoomed on the low-communication runs: data-parallel over a slow link runs off to the right.
    ends = [agg(v, l)["rep"]["evals"][-1][0] for v in order if v != "dp" and agg(v, l)]
    if ends: ax.set_xlim(0, 1.15 * max(ends))
    ax.set_ylim(3.5, 5.0)
    ax.set_title(f"4 simulated hosts, link: {link_name(l)}")
    ax.set_xlabel("wall time (s)")
    ax.grid(alpha=0.3)
axes[0][0].set_ylabel("validation bits per byte")
axes[0][0].legend(fontsize=8)
fig.tight_layout()
fig.savefig(f"{out}/val_bpb_vs_wall.png", dpi=110)
print(f"wrote {out}/results.md, {out}/results.json, {out}/val_bpb_vs_wall.png")
