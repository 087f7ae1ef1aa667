"""Terminal tables and run folders (results.json plus plots) for evaluation results."""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any

from edge.artifact import write_bytes_atomic
from edge.errors import ModelWriteError


def _fmt_ci(metric: dict[str, Any], scale: float = 1.0, digits: int = 1) -> str:
    value = metric["value"] * scale
    lo, hi = (v * scale for v in metric["ci95"])
    return f"{value:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def metric_rows(results: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, formatted value) pairs of one result document, in reading order."""
    m = results["metrics"]
    rows: list[tuple[str, str]] = []
    if "accuracy" in m:
        rows.append(("accuracy % [95% CI]", _fmt_ci(m["accuracy"], 100.0)))
        if "accuracy_over_subjects" in m:
            over = m["accuracy_over_subjects"]
            rows.append((f"accuracy % mean ± SD ({over['subjects']} subj.)",
                         f"{100 * over['mean']:.1f} ± {100 * over['sd']:.1f}"))
        rows.append(("balanced accuracy %", f"{100.0 * m['balanced_accuracy']:.1f}"))
        rows.append(("Cohen's kappa", f"{m['kappa']:.3f}"))
        rows.append(("chance %", f"{100.0 * m['chance']:.1f}"))
    rows += task_rows(m)
    if "itr_bits_per_min" in m:
        rows.append(("ITR bits/min [95% CI]", _fmt_ci(m["itr_bits_per_min"])))
        rows.append(("ITR of mean accuracy", f"{m['itr_bits_per_min']['of_mean_accuracy']:.1f}"))
    if "agreement_with_reference" in m:
        rows.append(("agreement with fp32 %", f"{100.0 * m['agreement_with_reference']:.1f}"))
    fidelity = m.get("fidelity")
    if fidelity:
        if fidelity.get("top1_agreement") is not None:
            rows.append(("fidelity to host: top-1 agreement %", f"{100.0 * fidelity['top1_agreement']:.2f}"))
        errors = (f"{fidelity['cosine_similarity']:.5f} / {fidelity['relative_l2']:.3g} / "
                  f"{fidelity['max_abs_error']:.3g}")
        rows.append(("fidelity: cosine / rel. L2 / max err", errors))
    lat = m.get("latency_ms")
    if lat:
        label = "latency p50/p90/p99 ms" if lat.get("source", "host wall clock") == "host wall clock" else \
            f"latency p50/p90/p99 ms ({_short_source(lat['source'])})"
        rows.append((label, f"{lat['p50']:.3f} / {lat['p90']:.3f} / {lat['p99']:.3f}"))
    rows += device_rows(results.get("device", {}))
    if "model_size_bytes" in m:
        rows.append(("model size KiB", f"{m['model_size_bytes'] / 1024:.1f}"))
    for key, label in (("arena_bytes", "tensor arena KiB"), ("sram_bytes", "NPU SRAM KiB"),
                       ("flash_bytes", "flash KiB")):
        if key in m.get("memory", {}):
            rows.append((label, f"{m['memory'][key] / 1024:.1f}"))
    if "peak_memory_bytes" in m:
        rows.append(("peak memory MiB", f"{m['peak_memory_bytes'] / 2**20:.1f}"))
    return rows


def task_rows(m: dict[str, Any]) -> list[tuple[str, str]]:
    """Rows of a regression (MSE, MAE, RMSE, R²) or anomaly (score, ROC AUC) task: never called accuracy."""
    rows: list[tuple[str, str]] = []
    reg = m.get("regression")
    if reg:
        for key, label in (("mse", "MSE"), ("mae", "MAE"), ("rmse", "RMSE"), ("r2", "R²")):
            value = reg[key]
            rows.append((f"{label} [95% CI]", "undefined" if value["value"] is None else
                         f"{value['value']:.4g} [{value['ci95'][0]:.4g}, {value['ci95'][1]:.4g}]"))
    anomaly = m.get("anomaly")
    if anomaly:
        mean = anomaly["mean"]
        label = "reconstruction MSE (mean)" if anomaly["score"].startswith("reconstruction") else "anomaly score (mean)"
        rows.append((f"{label} [95% CI]", f"{mean['value']:.4g} [{mean['ci95'][0]:.4g}, {mean['ci95'][1]:.4g}]"))
        if "roc_auc" in anomaly:
            rows.append((f"ROC AUC [95% CI] ({anomaly['anomalies']} anomalies)", _fmt_ci(anomaly["roc_auc"], 1.0, 3)))
    return rows


def _short_source(source: str) -> str:
    return source.split(" (")[0]


def device_rows(device: dict[str, Any]) -> list[tuple[str, str]]:
    """Rows a device adds: NPU cycles and operator placement (Vela), board clock."""
    rows = []
    if device.get("cycles_total"):
        rows.append(("NPU cycles (Vela)", f"{device['cycles_total']:,}"))
    if device.get("npu_operators") is not None:
        rows.append(("operators on NPU / CPU", f"{device['npu_operators']} / {device.get('cpu_operators', 0)}"))
    return rows


def format_table(columns: dict[str, dict[str, Any]]) -> str:
    """Side-by-side table of several result documents keyed by column title."""
    titles = list(columns)
    per_column = {t: dict(metric_rows(r)) for t, r in columns.items()}
    labels: list[str] = []
    for t in titles:
        labels += [label for label in per_column[t] if label not in labels]
    widths = [max(len(label) for label in labels)] + [
        max(len(t), *(len(per_column[t].get(label, "-")) for label in labels)) for t in titles
    ]
    lines = ["  ".join(h.ljust(w) for h, w in zip(["metric", *titles], widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for label in labels:
        cells = [label] + [per_column[t].get(label, "-") for t in titles]
        lines.append("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)))
    return "\n".join(line.rstrip() for line in lines)


def per_subject_table(columns: dict[str, dict[str, Any]]) -> str:
    """Accuracy (and ITR where known) of every subject, one column per result document."""
    titles = list(columns)
    subjects = list(dict.fromkeys(s for r in columns.values() for s in r["metrics"].get("per_subject", {})))
    if len(subjects) < 2:
        return ""
    lines = ["subject  " + "  ".join(f"{t:>14}" for t in titles)]
    for subject in subjects:
        cells = []
        for t in titles:
            row = columns[t]["metrics"].get("per_subject", {}).get(subject)
            cell = "-" if row is None else f"{100 * row['accuracy']:.1f} %"
            if row is not None and "itr_bits_per_min" in row:
                cell += f" {row['itr_bits_per_min']:.0f}b"
            cells.append(f"{cell:>14}")
        lines.append(f"{subject:<8} " + "  ".join(cells))
    return "\n".join(lines)


def new_run_folder(root: str | Path, name: str) -> Path:
    """A fresh folder ``root/<UTC time>-<name>`` that no earlier run used."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelWriteError(f"cannot create the run folder ({exc.strerror}).", where=str(root)) from None
    for i in range(1000):
        folder = root / (f"{stamp}-{name}" + (f"-{i}" if i else ""))
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
    raise ModelWriteError("could not find a free run folder name.", where=str(root))


def write_results(folder: Path, results: dict[str, Any], name: str = "results.json") -> Path:
    """Write one results document (atomically) and its confusion-matrix plot if it has one."""
    path = folder / name
    write_bytes_atomic(path, (json.dumps(results, indent=2) + "\n").encode())
    confusion = results.get("metrics", {}).get("confusion_matrix")
    if confusion:
        plot_confusion(confusion, folder / name.replace("results", "confusion").replace(".json", ".png"))
    return path


def plot_confusion(confusion: list[list[int]], path: Path) -> None:
    """Save the confusion matrix as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5))
    image = ax.imshow(confusion, cmap="viridis")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title("confusion matrix")
    fig.colorbar(image, ax=ax, label="trials")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)


def format_sweep(sweep: dict[str, Any]) -> str:
    """Accuracy % / ITR bits/min per method and window, one row per window."""
    methods = list(sweep["methods"])
    windows = [row["window_s"] for row in sweep["methods"][methods[0]]]
    lines = ["window s  " + "  ".join(f"{m + ' acc% / ITR':>22}" for m in methods)]
    for i, window in enumerate(windows):
        cells = [f"{100 * sweep['methods'][m][i]['accuracy']:6.1f} / {sweep['methods'][m][i]['itr_bits_per_min']:6.1f}"
                 for m in methods]
        lines.append(f"{window:<8.2f}  " + "  ".join(f"{c:>22}" for c in cells))
    lines.append(f"ITR: {sweep['itr_convention']}")
    return "\n".join(lines)


def plot_sweep(sweep: dict[str, Any], path: Path) -> None:
    """Save accuracy and ITR against window length as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (acc_ax, itr_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for method, rows in sweep["methods"].items():
        windows = [r["window_s"] for r in rows]
        acc_ax.plot(windows, [100 * r["accuracy"] for r in rows], marker="o", label=method)
        itr_ax.plot(windows, [r["itr_bits_per_min"] for r in rows], marker="o", label=method)
    acc_ax.set(xlabel="window length (s)", ylabel="accuracy (%)", title="accuracy")
    itr_ax.set(xlabel="window length (s)", ylabel="ITR (bits/min)", title="information transfer rate")
    for ax in (acc_ax, itr_ax):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
