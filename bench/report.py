"""The benchmark's one markdown table: medians over the rounds, each ratio against its floor, with its target.

Every ratio is the server's figure over the floor's (the same model, the same run): for requests per
second above 1 is faster than the floor, for cold start, peak RSS and in-process µs below 1 is better.
The range after a ratio is the lowest and highest of the per-round ratios (each round's servers ran
minutes apart at most, so a round's ratio is paired), a rough view of the noise.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import numpy as np

LABELS = {"nb2svc": "nb2svc", "floor": "floor", "bentoml": "BentoML", "mlflow": "MLflow"}
ORDER = ("nb2svc", "floor", "bentoml", "mlflow")
RESOURCE_TARGET = 1.1  # cold start and peak RSS at most this many times the floor's


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def key(*parts: str) -> str:
    return " | ".join(parts)


def _rate(value: float) -> str:
    return f"{value:,.0f} req/s" if value >= 100 else f"{value:.1f} req/s"


def _number(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def _ratio(per_round: dict[int, float], floor_per_round: dict[int, float]) -> tuple[float, str] | None:
    if not per_round or not floor_per_round:
        return None
    ratio = statistics.median(per_round.values()) / statistics.median(floor_per_round.values())
    paired = [per_round[r] / floor_per_round[r] for r in per_round if r in floor_per_round]
    spread = f" ({min(paired):.2f}–{max(paired):.2f})" if len(paired) > 1 else ""
    return ratio, f"{ratio:.2f}{spread}"


def _mark(ok: bool) -> str:
    return "✓" if ok else "✗"


def _row(*cells: str) -> str:
    return "| " + " | ".join(cells) + " |"


def markdown(
    workloads: list[Any],
    selected: list[str],
    models: dict[str, Any],
    results: Any,
    context: dict[str, Any],
    notes: list[str],
) -> str:
    short = " (SHORT development run: noisy, not a result)" if context["short"] else ""
    lines = [f"## {context['date']}, `make bench`{short}"]
    lines += [
        "",
        f"{context['machine']}; {context['versions']} (nb2svc from {context['nb2svc']}). {context['settings']}; "
        f"{context['load']}.",
        "",
        "| model | workload | server | value | vs | ratio | target | p50 ms | p99 ms | server CPU µs/req |",
        "| --- | --- | --- | ---: | --- | ---: | --- | ---: | ---: | ---: |",
    ]
    few_samples = False

    def wrk_rounds(model: str, workload: str, server: str, field: str) -> dict[int, float]:
        return {int(entry["round"]): entry[field] for entry in results.wrk.get(key(model, workload, server), [])}

    def latency(model: str, server: str, kind: str | None) -> tuple[str, str, float | None]:
        nonlocal few_samples
        samples = results.latency_ns.get(key(model, server, kind)) if kind else None
        if not samples:
            return "", "", None
        p50, p99 = (float(np.percentile(samples, q)) / 1e6 for q in (50, 99))
        dagger = "†" if len(samples) < 100 else ""
        few_samples = few_samples or bool(dagger)
        return _number(p50), _number(p99) + dagger, p99 / p50

    for model in models:
        for workload in workloads:
            if workload.key not in selected:
                continue
            floor_rates = wrk_rounds(model, workload.baseline, "floor", "requests_per_second")
            for server in ORDER:
                source = workload.baseline if server == "floor" else workload.key
                if server != "floor" and server not in workload.kinds:
                    continue
                rates = wrk_rounds(model, source, server, "requests_per_second")
                error = results.errors.get(key(model, source, server)) or results.errors.get(key(model, server))
                if not rates:
                    if error:
                        lines.append(_row(model, workload.label, LABELS[server], f"failed: {error[:80]}", *[""] * 6))
                    continue
                kind = workload.kinds.get(server) if server != "floor" else _floor_kind(workloads, workload)
                p50, p99, tail = latency(model, server, kind)
                cpu = statistics.median(wrk_rounds(model, source, server, "cpu_us_per_request").values())
                label = LABELS[server]
                if server == "floor":
                    if source != workload.key:
                        baseline = next(w for w in workloads if w.key == source)
                        label = f"{workload.floor_label} (its '{baseline.label}')"
                    else:
                        label = workload.floor_label
                    vs, ratio_text, target = "", "1", ""
                else:
                    ratio = _ratio(rates, floor_rates)
                    vs = workload.floor_label
                    ratio_text = ratio[1] if ratio else "no floor"
                    target = ""
                    if server == "nb2svc" and ratio:
                        least = workload.targets[model]
                        target = f"≥ {least:g} {_mark(ratio[0] >= least)}"
                        if workload.p99_over_p50 and tail is not None:
                            most = workload.p99_over_p50
                            target += f"; p99 ≤ {most:g}×p50: {tail:.1f}× {_mark(tail <= most)}"
                value = _rate(statistics.median(rates.values()))
                lines.append(_row(model, workload.label, label, value, vs, ratio_text, target, p50, p99, f"{cpu:,.0f}"))
        for measure_name, figures, unit in (
            ("cold start", results.cold_start, "s"),
            ("peak RSS", results.peak_rss_mib, "MiB"),
        ):
            floor_rounds = dict(figures.get(key(model, "floor"), []))
            for server in ORDER:
                per_round = dict(figures.get(key(model, server), []))
                if not per_round:
                    continue
                value = statistics.median(per_round.values())
                shown = f"{value:.2f} s" if unit == "s" else f"{value:,.0f} MiB"
                ratio = _ratio(per_round, floor_rounds) if server != "floor" else None
                target = ""
                if ratio and server == "nb2svc":
                    target = f"≤ {RESOURCE_TARGET:g} {_mark(ratio[0] <= RESOURCE_TARGET)}"
                vs = "floor" if ratio else ""
                ratio_text = ratio[1] if ratio else ("1" if server == "floor" else "")
                lines.append(_row(model, measure_name, LABELS[server], shown, vs, ratio_text, target, "", "", ""))
        for body, apps in results.asgi.get(model, {}).items():
            ours, floor = apps["nb2svc"], apps["floor"]
            where = f"in process, {body}"
            lines.append(_row(model, where, "floor", f"{floor:,.1f} µs/req", "", "1", "", "", "", ""))
            lines.append(_row(model, where, "nb2svc", f"{ours:,.1f} µs/req", "floor", f"{ours / floor:.2f}", *[""] * 4))
    lines += ["", "Notes:", ""]
    lines.append(
        "- value: wrk's requests/s, median over the rounds; ratio: the server's over the floor's in the same run "
        "(range: the lowest and highest per-round ratio); p50/p99: every request timed at 1 connection "
        "(not wrk's corrected percentiles); server CPU: utime+stime of the server's processes over the wrk run "
        "per request; cold start: process start to the first 200 on the predict route; peak RSS: VmHWM summed "
        "over the server's processes."
    )
    if few_samples:
        lines.append("- †: fewer than 100 requests timed, so this p99 is close to the slowest one.")
    stacks = ", ".join(f"{LABELS.get(server, server)} {stack}" for server, stack in sorted(results.stack.items()))
    if stacks:
        lines.append(f"- event loop + HTTP parser loaded: {stacks}.")
    lines += [f"- {note}" for note in notes]
    for where, error in sorted(results.errors.items()):
        lines.append(f"- error, {where}: {error[:200]}")
    return "\n".join(lines)


def _floor_kind(workloads: list[Any], workload: Any) -> str | None:
    baseline = next(w for w in workloads if w.key == workload.baseline)
    kind: str | None = baseline.kinds.get("floor")
    return kind
