"""Assembles bench/results/latest.md from the fragments in bench/results/parts/ and draws
bench/results/failover.png from parts/failover_timeline.csv (our client and the grpc-go
reference setup through the same instance kill)."""

import csv
import datetime
import os
import platform
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
PARTS = os.path.join(RESULTS, "parts")
ORDER = ["c_abi", "metrics", "tls", "async", "pick", "scale", "discovery", "dead", "python", "go", "cpu"]


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def plot(csv_path, png_path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("report: matplotlib missing, no plot", file=sys.stderr)
        return False
    series = {}
    with open(csv_path) as f:
        for row in csv.DictReader(f):
            s = series.setdefault(row["client"], {"t": [], "calls": [], "errors": []})
            s["t"].append(int(row["t_ms"]) / 1000.0)
            s["calls"].append(int(row["calls"]) * 10)  # per 100 ms bin -> calls/s
            s["errors"].append(int(row["errors"]))
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(9, 6))
    for name, s in sorted(series.items()):
        top.plot(s["t"], s["calls"], label=name)
        bottom.plot(s["t"], s["errors"], label=name)
    # bench/go kills one of the three instances at 2 s and starts it again at 3.5 s.
    for ax in (top, bottom):
        ax.axvline(2.0, color="red", linestyle="--", linewidth=1)
        ax.axvline(3.5, color="green", linestyle="--", linewidth=1)
    top.annotate("SIGKILL", (2.0, 0.02), xycoords=("data", "axes fraction"), color="red")
    top.annotate("restart", (3.5, 0.02), xycoords=("data", "axes fraction"), color="green")
    top.set_ylabel("successful calls/s")
    bottom.set_ylabel("caller-visible errors\nper 100 ms")
    bottom.set_xlabel("seconds (one of three instances SIGKILLed mid-run)")
    top.legend()
    top.set_title("Failover through an instance kill: grpc-failover vs grpc-go reference setup")
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    return True


def main():
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE).stdout.strip()
    except OSError:
        rev = "?"
    lines = [
        "# grpc-failover benchmark report",
        "",
        f"Measured {now} at commit {rev} on {os.cpu_count()} cores ({cpu_model()}), Linux {platform.release()}.",
        "Every comparison in a table was measured in this same run, on the same machine, against the same gf-testserver processes.",
        "Produced by `make bench`.",
        "",
    ]
    for name in ORDER:
        path = os.path.join(PARTS, name + ".md")
        if os.path.exists(path):
            with open(path) as f:
                lines.append(f.read().rstrip())
                lines.append("")
        else:
            lines.append(f"<!-- {name}: not measured in this run -->")
            lines.append("")
    timeline = os.path.join(PARTS, "failover_timeline.csv")
    if os.path.exists(timeline) and plot(timeline, os.path.join(RESULTS, "failover.png")):
        lines.append("## Failover timeline")
        lines.append("")
        lines.append("![calls/s and errors through an instance kill](failover.png)")
        lines.append("")
    with open(os.path.join(RESULTS, "latest.md"), "w") as f:
        f.write("\n".join(lines))
    print(f"wrote {os.path.join(RESULTS, 'latest.md')}")


if __name__ == "__main__":
    main()
