"""scikit-learn's digits: 1,797 real 8x8 grey images of handwritten digits,
10 classes, shipped with scikit-learn (no download). The embedded default.
"""

import numpy as np

from workflow.datasets import RawDataset, register_dataset


@register_dataset("sklearn_digits", classes=10)
def sklearn_digits() -> RawDataset:
    # Imported here: every Snakemake start loads the dataset registry, and
    # sklearn.datasets takes about a second to import.
    from sklearn.datasets import load_digits

    digits = load_digits()
    # Pixel values are 0..16; stretch them to the usual 0..255 of uint8 images.
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    return RawDataset(
        images=images,
        labels=digits.target.astype(np.int64),
        class_names=[str(name) for name in digits.target_names],
    )
