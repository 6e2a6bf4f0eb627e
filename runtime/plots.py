"""Pictures of an evaluation: mean deletion / insertion curves (matplotlib) and side-by-side method panels (PIL)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from camrt.errors import CamrtError
from camrt.runtime.atomic import atomic_write
from camrt.runtime.overlay import overlay


def plot_curves(summary: dict[str, Any], variant: str, path: str | Path) -> Path:
    """Mean deletion and insertion curves of every method (AUC in the legend) as one PNG with two panels."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        raise CamrtError("plots need matplotlib: pip install camrt[plots]") from None
    curves = summary["curves"][variant]
    aucs = {row["metric"].split()[0].lower(): row["values"] for row in summary["metrics"]
            if row["variant"] == variant and row["metric"].endswith("AUC")}
    figure, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, curve in zip(axes, ("deletion", "insertion")):
        for label, values in curves[curve].items():
            auc = aucs.get(curve, {}).get(label)
            ax.plot(curves["x"], values, label=f"{label} (AUC {auc:.3f})" if auc is not None else label)
        count = summary["evaluated"]
        ax.set_title(f"{curve.capitalize()} ({variant}, {count} image{'' if count == 1 else 's'})")
        ax.set_xlabel("pixels " + ("deleted" if curve == "deletion" else "inserted") + " (fraction)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("score of the predicted class")
    figure.tight_layout()
    try:
        return atomic_write(path, lambda handle: figure.savefig(handle, format="png", dpi=110))
    finally:
        plt.close(figure)


def method_panel(rgb: np.ndarray, maps: Sequence[np.ndarray], titles: Sequence[str], path: str | Path,
                 alpha: float = 0.5, photo_title: str = "photo") -> Path:
    """The photo and one overlay per method side by side, each with up to two caption lines, as one PNG."""
    tiles = [np.asarray(rgb)] + [overlay(rgb, m, alpha) for m in maps]
    height, width = tiles[0].shape[:2]
    font = ImageFont.load_default()
    caption = 16
    canvas = Image.new("RGB", (width * len(tiles), height + caption * 2), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (tile, title) in enumerate(zip(tiles, [photo_title, *titles])):
        canvas.paste(Image.fromarray(tile), (i * width, caption * 2))
        for line, text in enumerate(str(title).split("\n")[:2]):
            draw.text((i * width + 4, 2 + line * caption), text, fill="black", font=font)
    return atomic_write(path, lambda handle: canvas.save(handle, format="PNG"))
