"""Pictures of a verify run: a contact sheet, learning curves and a self-contained HTML page."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np

from unlearn_cli.io.images import load_photo
from unlearn_cli.verify.files import original_path

CONTACT_SHEET = "contact_sheet.png"
LEARNING_CURVES = "learning_curves.png"
REPORT_PAGE = "report.html"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def amplified_noise(original: np.ndarray, protected: np.ndarray, eps: int) -> np.ndarray:
    """The protected-minus-original difference stretched so that +-eps fills the colour range:
    noise too faint to see at its true size."""
    noise = protected.astype(np.int16) - original.astype(np.int16)
    return np.clip(127.5 + noise * (127.5 / eps), 0, 255).astype(np.uint8)


def contact_sheet(
    folder: Path, manifest: dict, originals: Path | None, target: Path, count: int = 6
) -> int:
    """Original, protected, and the noise amplified to fill the colour range, for a sample of
    photos (spread over the manifest). Returns how many rows were drawn."""
    plt = _pyplot()
    photos = [
        p
        for p in manifest["photos"]
        if (folder / p["output"]).is_file() and original_path(manifest, p, originals).is_file()
    ]
    if not photos:
        return 0
    step = max(1, len(photos) // count)
    sample = photos[::step][:count]
    eps = manifest["settings"]["eps"]
    figure, axes = plt.subplots(len(sample), 3, figsize=(9, 3 * len(sample)), squeeze=False)
    for row, photo in zip(axes, sample, strict=True):
        original = load_photo(original_path(manifest, photo, originals)).rgb
        protected = load_photo(folder / photo["output"]).rgb
        amplified = amplified_noise(original, protected, eps)
        for axis, image, title in zip(
            row,
            (original, protected, amplified),
            ("original", "protected", f"noise x{127.5 / eps:.0f}"),
            strict=True,
        ):
            axis.imshow(image)
            axis.set_title(
                f"{title}\n{photo['output']}" if title == "original" else title, fontsize=8
            )
            axis.axis("off")
    figure.tight_layout()
    figure.savefig(target, dpi=100)
    plt.close(figure)
    return len(sample)


def learning_curves(learnability: dict, target: Path) -> None:
    """Share of held-out clean photos recognised after each epoch, clean vs protected training."""
    plt = _pyplot()
    curves = learnability["curves"]
    figure, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 3.6), squeeze=False)
    for axis, (architecture, conditions) in zip(axes[0], curves.items(), strict=True):
        for condition, style in (("clean", "-"), ("protected", "--")):
            epochs = conditions[condition]
            for name in epochs[0] if epochs else []:
                axis.plot(
                    range(1, len(epochs) + 1),
                    [e[name] for e in epochs],
                    style,
                    label=f"{name}, trained on {condition}",
                )
        axis.axhline(learnability["chance"], color="grey", linewidth=0.8, label="random guess")
        axis.set_title(architecture)
        axis.set_xlabel("epoch")
        axis.set_ylabel("held-out clean photos recognised")
        axis.set_ylim(-0.02, 1.02)
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(target, dpi=100)
    plt.close(figure)


def _embedded(path: Path) -> str:
    encoded = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.name)}" src="data:image/png;base64,{encoded}">'


def _table(headers: list[str], rows: list[list[object]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def write_report(
    report_dir: Path, folder: Path, manifest: dict, result: dict, originals: Path | None
) -> list[Path]:
    """Write the PNGs and the HTML page that embeds them; returns the written files."""
    report_dir.mkdir(parents=True, exist_ok=True)
    written = []
    sections = [f"<h1>unlearn verify: {html.escape(str(folder))}</h1>"]
    verdict = "PASSED" if result["passed"] else "FAILED"
    sections.append(f"<p><b>{verdict}</b> (eps {result['eps']} levels)</p>")
    sheet = report_dir / CONTACT_SHEET
    if contact_sheet(folder, manifest, originals, sheet):
        written.append(sheet)
        sections.append("<h2>Original, protected, noise</h2>" + _embedded(sheet))
    sections.append(
        "<h2>Budget and integrity</h2>"
        + _table(
            ["photo", "integrity", "L-inf", "mean |d|", "PSNR", "SSIM", "problems"],
            [
                [
                    p["output"],
                    p["integrity"],
                    *(
                        [
                            p["budget"]["linf"],
                            p["budget"]["mean_abs"],
                            p["budget"]["psnr"],
                            p["budget"]["ssim"],
                        ]
                        if p["budget"]
                        else ["", "", "", ""]
                    ),
                    "; ".join(p["problems"]),
                ]
                for p in result["photos"]
            ],
        )
    )
    learnability = result["checks"].get("learnability")
    if learnability:
        curves = report_dir / LEARNING_CURVES
        learning_curves(learnability, curves)
        written.append(curves)
        note = (
            " (optimistic: references are the surrogate's classes)"
            if learnability["optimistic"]
            else ""
        )
        sections.append(
            f"<h2>Learnability{html.escape(note)}</h2>"
            + _table(
                ["architecture", "countermeasure", "class", "clean", "protected", "passed"],
                [
                    [
                        r["architecture"],
                        r["countermeasure"],
                        r["class"],
                        r["clean"],
                        r["protected"],
                        "inconclusive" if r["inconclusive"] else r["passed"],
                    ]
                    for r in learnability["results"]
                ],
            )
            + f"<p>random guess: {learnability['chance']}</p>"
            + _embedded(curves)
        )
    page = report_dir / REPORT_PAGE
    style = (
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 6px}img{max-width:100%}"
    )
    page.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>unlearn verify</title>"
        f"<style>{style}</style></head><body>{''.join(sections)}</body></html>",
        encoding="utf-8",
    )
    written.append(page)
    return written
