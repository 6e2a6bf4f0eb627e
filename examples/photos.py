"""Real photos that ship inside PyPI packages (scikit-image, matplotlib, scikit-learn), written out as files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

# name -> (where it comes from, what an ImageNet model should see)
PHOTOS = {
    "chelsea": ("skimage.data.chelsea", "a tabby cat"),
    "coffee": ("skimage.data.coffee", "a cup of coffee"),
    "astronaut": ("skimage.data.astronaut", "an astronaut (no ImageNet class; a portrait)"),
    "rocket": ("skimage.data.rocket", "a rocket on its launch pad"),
    "grace_hopper": ("matplotlib sample data grace_hopper.jpg", "a woman in uniform (military uniform)"),
    "china": ("sklearn.datasets.load_sample_images china.jpg", "a pagoda / palace roof"),
}


def _load(name: str) -> np.ndarray:
    if name == "grace_hopper":
        import matplotlib.cbook

        with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as handle:
            return np.asarray(Image.open(handle).convert("RGB"))
    if name == "china":
        from sklearn.datasets import load_sample_images

        data = load_sample_images()
        return data.images[[Path(f).name for f in data.filenames].index("china.jpg")]
    from skimage import data

    return getattr(data, name)()


def photo_paths(folder: str | Path, names: list[str] | None = None) -> list[Path]:
    """Write the photos as JPEG files into ``folder`` (once) and return their paths, in PHOTOS order."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names or list(PHOTOS):
        path = folder / f"{name}.jpg"
        if not path.exists():
            Image.fromarray(_load(name)).convert("RGB").save(path, quality=95)
        paths.append(path)
    return paths
