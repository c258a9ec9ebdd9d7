"""Write ``digits.npz``, the packaged copy of scikit-learn's 8x8 digits, from an installed scikit-learn.

Run once by hand when the file needs regenerating (it is committed, so a bare
install needs no scikit-learn)::

    python -m shieldkit.data._make_digits

The file is a NumPy ``.npz`` archive (no pickled objects) holding, in
scikit-learn's own order:

- ``images``: ``uint8 [1797, 8, 8]``, counts 0..16 (the original 4x4 blocks);
- ``labels``: ``uint8 [1797]``, 0..9.

The archive is written with fixed timestamps, so the same data gives the same bytes.
"""

from __future__ import annotations

import io
import logging
import zipfile
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

DIGITS_FILE = Path(__file__).with_name("digits.npz")
#: a fixed member timestamp (zip's epoch), so rerunning the script does not change the file
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def digits_arrays() -> dict[str, np.ndarray]:
    """The digits images and labels from scikit-learn, as the compact integer arrays the file stores."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.asarray(bunch.images)
    labels = np.asarray(bunch.target)
    # The values are whole numbers in 0..16 and 0..9: uint8 loses nothing, which is checked here.
    arrays = {"images": images.astype(np.uint8), "labels": labels.astype(np.uint8)}
    if not (np.array_equal(arrays["images"], images) and np.array_equal(arrays["labels"], labels)):
        raise ValueError("scikit-learn's digits are no longer small whole numbers; the file format needs changing")
    return arrays


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez_compressed`` with fixed member timestamps (NumPy stamps each member with the current time)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
            member = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_DATE)
            member.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(member, buffer.getvalue(), compresslevel=9)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    arrays = digits_arrays()
    write_npz(DIGITS_FILE, arrays)
    logger.info("wrote %s (%d bytes, %d images)", DIGITS_FILE, DIGITS_FILE.stat().st_size, len(arrays["labels"]))


if __name__ == "__main__":
    main()
