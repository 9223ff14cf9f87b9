"""Shared fixtures: small synthetic datasets written in torchvision's real on-disk formats
(MNIST idx files, CIFAR-10 pickle batches), so the real loading code runs in every test, and a
small model trained on them once per session.

Real datasets are used only when FRAGILE_NEURONS_DATA names a torchvision root (`.ci/run` sets
it when ../shared/datasets exists); tests that need them skip cleanly otherwise.
"""

from __future__ import annotations

import os
import pathlib
import pickle
import runpy
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fragile_neurons.attacks.targeting import excess_share
from fragile_neurons.datasets import files
from fragile_neurons.network.models import build_model
from fragile_neurons.network.training import train_model
from fragile_neurons.pipeline import prepare
from fragile_neurons.running.runtime import keep_freed_memory, seed_everything
from fragile_neurons.storage.records import Gains, Labels, Targeting

keep_freed_memory()  # as every stage does: faster CPU passes, identical results

ROOT = Path(__file__).resolve().parents[1]
CIFAR_CLASSES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]


def run_script(stage: str, *args: str) -> None:
    """`python stages/<stage>.py <args>` in this process, in the current directory, as dvc.yaml
    runs it (as `__main__`, with its own sys.argv), without a new interpreter's start-up. A bad
    input ends it with SystemExit(2), as the script would exit."""
    script = ROOT / "stages" / f"{stage}.py"
    argv = sys.argv
    sys.argv = [str(script), *args]
    try:
        runpy.run_path(str(script), run_name="__main__")
    finally:
        sys.argv = argv


def prepare_splits(
    dataset: str,
    root,
    download: bool,
    pins: dict | None,
    selection_size: int,
    train_size: int | None,
    test_size: int | None,
    seed: int,
    run: str = "run",
) -> tuple[dict, dict, dict, dict]:
    """The prepare stage's load and run on a raw root (no files written): (train, selection,
    test, data.json's report). `pins`: data.accept_checksum_mismatch, by dataset."""
    settings = prepare.Settings(
        dataset=dataset,
        root=pathlib.Path(root),
        download=download,
        pins=(pins or {}).get(dataset) or {},
        selection_size=selection_size,
        train_size=train_size,
        test_size=test_size,
        seed=seed,
        run=run,
    )
    return tuple(prepare.run(prepare.load(None, settings), settings))


def labels_record(
    phi, label: list[str], fraction: float = 0.25, reliability: float = float("nan")
) -> Labels:
    """A label stage's record with fragility `phi` (also every impact and loss impact: a clean
    score) and `label`; antifragile where robust and phi < 0; every McNemar p-value 1, no
    warnings (resolved) and the clean phi's split-half `reliability`."""
    phi = torch.as_tensor(phi, dtype=torch.float64)
    robust = torch.tensor([name == "robust" for name in label])
    return Labels(
        score="clean",
        fraction=fraction,
        phi=phi,
        clean_impact=phi,
        adversarial_impact=phi,
        difference_impact=phi,
        label=list(label),
        antifragile=robust & (phi < 0),
        clean_loss_impact=phi,
        adversarial_loss_impact=phi,
        difference_loss_impact=phi,
        mcnemar_p=torch.ones_like(phi),
        warnings=[],
        clean_reliability=float(reliability),
    )


def gains_record(gain, draws: int = 2) -> Gains:
    """A harden stage's gains record holding the gate `gain` (its flip as the inverse), with no
    fragile or robust set (so `draws` random controls that change nothing, as the rule gives
    them): for tests that need a hardened variant, not the rule that made it."""
    gain = torch.as_tensor(gain, dtype=torch.float64)
    n = len(gain)
    return Gains(
        gain=gain,
        inverse_gain=gain.flip(0),
        magnitude=torch.ones(n, dtype=torch.float64),
        phi=torch.zeros(n, dtype=torch.float64),
        fragile=torch.arange(0, dtype=torch.int64),
        robust=torch.arange(0, dtype=torch.int64),
        compress=0.5,
        mode="proportional",
        max_gain=4.0,
        labels_resolved=True,
        random_gain=torch.ones(draws, n, dtype=torch.float64),
        random_ratio=torch.ones(draws, dtype=torch.float64),
        random_matched=True,
        random_tolerance=0.1,
        compress_only_gain=torch.ones(n, dtype=torch.float64),
        amplify_only_gain=gain.clamp_min(1.0),
    )


def first_half(counts, samples: int, losses=None) -> dict:
    """The per-half fields of a ScanMeasurements (first half: samples // 2 images) whose correct
    counts are `counts` ({'intact_correct': ..., 'dropped_correct': ...}) and mean losses
    `losses` ({'intact_loss': ..., 'dropped_loss': ...}; None: 0): each count split in
    proportion, floor(count * half / samples), which both halves can hold; each loss summed
    over each half as if every image had the mean loss."""
    half = samples // 2
    if losses is None:
        losses = {
            name.replace("correct", "loss"): torch.zeros(torch.as_tensor(value).shape)
            for name, value in counts.items()
        }
    return {
        "half_samples": half,
        **{
            f"first_half_{name}": torch.as_tensor(value) * half // samples
            for name, value in counts.items()
        },
        **{
            f"{which}_half_{name}_sum": torch.as_tensor(value, dtype=torch.float64) * size
            for name, value in losses.items()
            for which, size in (("first", half), ("second", samples - half))
        },
    }


def targeting_record(
    share,
    magnitude,
    epsilons=None,
    effect=None,
    noise=None,
    gain=None,
    reference=None,
    surrogate=None,
    placebo=None,
    reference_halves=None,
) -> Targeting:
    """An attack stage's targeting record with attack share `share` (E x N; also T and R unless
    `effect` is given), magnitudes `magnitude`, noise share `noise` (default: uniform over the
    neurons), filter gain `gain` (default 1), reference share `reference` (default: none, NaN)
    surrogate share `surrogate` (default: uniform), placebo share `placebo` (default: none,
    NaN; needs `reference`) and X^ref on each half of S `reference_halves` (2 x N; default NaN);
    X, X^ref, X^plc and X^sur are computed from them as the stage does."""
    share = torch.as_tensor(share, dtype=torch.float64)
    e, n = share.shape
    epsilons = [0.1 * (i + 1) for i in range(e)] if epsilons is None else list(epsilons)
    effect = share if effect is None else torch.as_tensor(effect, dtype=torch.float64)
    noise = torch.full((e, n), 1 / n, dtype=torch.float64) if noise is None else noise
    noise = torch.as_tensor(noise, dtype=torch.float64)
    nan = torch.full((e, n), float("nan"), dtype=torch.float64)
    reference_share = nan if reference is None else torch.as_tensor(reference, dtype=torch.float64)
    uniform = torch.full((e, n), 1 / n, dtype=torch.float64)
    surrogate = uniform if surrogate is None else torch.as_tensor(surrogate, dtype=torch.float64)
    placebo_share = nan if placebo is None else torch.as_tensor(placebo, dtype=torch.float64)
    halves = torch.full((2, n), float("nan"), dtype=torch.float64)
    if reference_halves is not None:
        halves = torch.as_tensor(reference_halves, dtype=torch.float64)
    return Targeting(
        epsilons=epsilons,
        epsilon_labels=[f"{x:g}" for x in epsilons],
        effect=effect,
        relative_effect=effect,
        share=share,
        magnitude=torch.as_tensor(magnitude, dtype=torch.float64),
        noise_share=noise,
        excess_share=excess_share(share, noise),
        null_excess=torch.ones(n, dtype=torch.float64),
        filter_gain=torch.ones(n, dtype=torch.float64)
        if gain is None
        else torch.as_tensor(gain, dtype=torch.float64),
        noise_seed=0,
        reference=reference is not None,
        reference_share=reference_share,
        reference_excess=excess_share(share, reference_share),
        reference_excess_halves=halves,
        placebo=placebo is not None,
        placebo_share=placebo_share,
        placebo_excess=excess_share(reference_share, placebo_share),
        surrogate_share=surrogate,
        surrogate_excess=excess_share(share, surrogate),
        surrogate_seed=1,
        surrogate_iterations=20,
        surrogate_error=0.1,
        surrogate_error_max=0.2,
    )


def synthetic_images(n: int, channels: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images N x size x size x channels whose class (0-9) is a bright block's position,
    over noise: easy to learn, hard enough that accuracy is not trivially 1."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    rng.shuffle(labels)
    images = rng.integers(0, 90, size=(n, size, size, channels)).astype(np.uint8)
    cell = size // 4
    for i, c in enumerate(labels):
        r, q = divmod(int(c), 4)
        images[i, r * cell : (r + 1) * cell, q * cell : (q + 1) * cell, :] = rng.integers(
            170, 256, size=(cell, cell, channels)
        )
    return images, labels.astype(np.uint8)


def write_idx(folder: Path, prefix: str, images: np.ndarray, labels: np.ndarray) -> None:
    """MNIST's idx3/idx1 format (magic 2051/2049, big-endian sizes), uncompressed."""
    folder.mkdir(parents=True, exist_ok=True)
    n, h, w = images.shape[:3]
    (folder / f"{prefix}-images-idx3-ubyte").write_bytes(
        struct.pack(">IIII", 2051, n, h, w) + images[..., 0].tobytes()
    )
    (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(
        struct.pack(">II", 2049, n) + labels.tobytes()
    )


def write_cifar(folder: Path, train: tuple, test: tuple) -> None:
    """CIFAR-10's python pickles: 5 training batches, a test batch and batches.meta."""
    folder.mkdir(parents=True, exist_ok=True)

    def batch(images, labels, name):
        flat = images.transpose(0, 3, 1, 2).reshape(len(images), -1)  # R plane, G, B
        blob = {
            "batch_label": name,
            "labels": labels.tolist(),
            "data": flat,
            "filenames": [f"{i}.png" for i in range(len(labels))],
        }
        (folder / name).write_bytes(pickle.dumps(blob, protocol=2))

    parts = np.array_split(np.arange(len(train[1])), 5)
    for i, idx in enumerate(parts, start=1):
        batch(train[0][idx], train[1][idx], f"data_batch_{i}")
    batch(*test, "test_batch")
    meta = {"label_names": CIFAR_CLASSES, "num_cases_per_batch": len(parts[0]), "num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))


# Images of the selection split the session's prepared splits carve out of the synthetic raw
# training split (RAW_TRAIN images: the train split keeps 400).
SELECTION = 100
RAW_TRAIN = 500


def make_root(root: Path, train_n: int = RAW_TRAIN, test_n: int = 200) -> Path:
    """A torchvision root with synthetic MNIST, FashionMNIST and CIFAR-10."""
    for i, name in enumerate(("MNIST", "FashionMNIST")):
        write_idx(root / name / "raw", "train", *synthetic_images(train_n, 1, 28, 10 * i))
        write_idx(root / name / "raw", "t10k", *synthetic_images(test_n, 1, 28, 10 * i + 1))
    write_cifar(
        root / "cifar-10-batches-py",
        synthetic_images(train_n, 3, 32, 20),
        synthetic_images(test_n, 3, 32, 21),
    )
    return root


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    return make_root(tmp_path_factory.mktemp("datasets"))


@pytest.fixture(scope="session")
def synthetic_pins(synthetic_root) -> dict[str, dict[str, str]]:
    """data.accept_checksum_mismatch for the synthetic root: every file's md5, pinned (the
    synthetic files differ from the originals, as a re-packed copy would)."""
    return {
        dataset: files.file_md5s(dataset, synthetic_root) for dataset in files.TORCHVISION_CLASS
    }


@pytest.fixture(scope="session")
def mnist_prepared(synthetic_root, synthetic_pins) -> tuple[dict, dict, dict]:
    """The synthetic MNIST as the prepare stage splits it: (train, selection, test)."""
    train, selection, test, _ = prepare_splits(
        "mnist", synthetic_root, False, synthetic_pins, SELECTION, None, None, 0
    )
    return train, selection, test


@pytest.fixture(scope="session")
def mnist_splits(mnist_prepared) -> tuple[dict, dict]:
    """The train and test splits of `mnist_prepared`."""
    train, _, test = mnist_prepared
    return train, test


@pytest.fixture(scope="session")
def mnist_selection(mnist_prepared) -> dict:
    """The selection split of `mnist_prepared`: the scan set S's images."""
    return mnist_prepared[1]


@pytest.fixture(scope="session")
def trained_mnist(mnist_splits):
    """A mnist_cnn trained for a few epochs on the synthetic digits (eval mode, CPU)."""
    train, test = mnist_splits
    generator = seed_everything(0)
    model = build_model("mnist_cnn", 1, 28, 10, train["mean"], train["std"])
    train_model(
        model,
        train,
        test,
        epochs=4,
        batch_size=32,
        lr=0.003,
        weight_decay=0.0,
        augment_images=False,
        device=torch.device("cpu"),
        generator=generator,
        progress=False,
    )
    model.zero_grad(set_to_none=True)  # a trained model as a checkpoint gives it: no gradients
    return model.eval()


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors gain nothing from intra-op threads, and on a busy machine waiting threads
    spin: one thread keeps these tests fast."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def real_root() -> Path:
    root = os.environ.get("FRAGILE_NEURONS_DATA")
    if not root or not Path(root).is_dir():
        pytest.skip("real datasets not available (set FRAGILE_NEURONS_DATA to a torchvision root)")
    return Path(root)


def stage_metrics(seed: int, compress: float = 0.5, offset: float = 0.0) -> dict[str, dict]:
    """The summaries of one run's stages, {stage: summary}, as their modules return them: each
    stage's declared headline (headline.py) and a few other values (strings, lists, nested
    dicts) that stay in its details."""
    evaluate = {
        "clean_accuracy_change": -0.01 * compress + 0.001 * seed,
        "clean_accuracy_change_low": -0.02,
        "clean_accuracy_change_high": 0.0,
        "calibration_max_gap": 0.01 + 0.005 * seed,
        "calibrated": seed < 2,
        "masking": seed % 2 == 1,
        "masking_testable": True,
        "masking_mid_flagged": seed % 2 == 1,
        "masking_mid_p": 0.5 / (1 + seed),
    }
    for i, attack in enumerate(("fgsm", "pgd", "transfer")):
        gain = offset + 0.1 * (i + 1) * (0.5 - compress) + 0.01 * seed
        evaluate |= {
            f"{attack}_auc_plus_gain": gain,
            f"{attack}_auc_plus_gain_low": gain - 0.05,
            f"{attack}_auc_plus_gain_high": gain + 0.05,
            f"{attack}_margin_over_random": gain - 0.03,
            f"{attack}_p_value": 1 / 21 + seed / 100,
        }
    for i, arm in enumerate(("compress_only", "amplify_only", "recalibrated")):
        gain = offset - 0.01 * (i + 1) + 0.005 * seed
        evaluate |= {
            f"{arm}_pgd_auc_plus_gain": gain,
            f"{arm}_pgd_auc_plus_gain_low": gain - 0.02,
            f"{arm}_pgd_auc_plus_gain_high": gain + 0.02,
        }
    gain = {a: {"auc": {"value": 0.5 * (i + 1)}} for i, a in enumerate(("fgsm", "pgd", "transfer"))}
    return {
        "train": {
            "headline": {"test_accuracy": 0.99 - 0.001 * seed},
            "epochs": [3],
            "device": "cpu",
        },
        "reference": {"headline": {"test_accuracy": 0.985 - 0.001 * seed}, "reference": True},
        "placebo": {"headline": {"test_accuracy": 0.984 - 0.001 * seed}, "placebo": True},
        "label": {
            "headline": {
                "resolved": seed != 3,
                "significant": 2 + seed,
                "clean_reliability": 0.6 + 0.05 * seed,
                "loss_reliability": 0.7 + 0.04 * seed,
            },
            "score": "clean",
        },
        "correlate": {
            "headline": {
                "reference": True,
                "reference_excess_spearman_rho": offset + 0.1 * seed - 0.15,
                "reference_excess_spearman_p": 0.02 * (seed + 1),
                "placebo": True,
                "placebo_excess_spearman_rho": 0.02 * seed - 0.03,
                "placebo_excess_spearman_p": 0.5,
                "reference_excess_reliability": 0.4 + 0.05 * seed,
                "ceiling": 0.5 + 0.02 * seed,
                "surrogate_excess_spearman_rho": 0.05 * seed,
                "surrogate_excess_spearman_p": 0.3,
                "excess_spearman_rho": offset + 0.1 * seed - 0.15,
                "excess_spearman_p": 0.01 * (seed + 1),
                "share_spearman_rho": 0.3 + 0.05 * seed,
                "share_spearman_p": 0.001 * (seed + 1),
                "noise_spearman_rho": 0.1,
                "filter_gain_spearman_rho": 0.2 + 0.01 * seed,
                "reference_share_spearman_rho": 0.25,
                "loss_reference_excess_spearman_rho": offset + 0.08 * seed - 0.1,
                "loss_reference_excess_spearman_p": 0.03 * (seed + 1),
            },
            "score": "clean",
            "spearman_rho": 0.5,  # top level: not a headline
        },
        "harden": {"labels_resolved": seed != 3, "layer": "conv1"},
        "evaluate": {
            "headline": evaluate,
            "gain": gain,
            "variants": {"original": {"auc": 0.5}},
        },
    }


def metrics_files(seed: int, compress: float = 0.5, offset: float = 0.0) -> dict[str, dict]:
    """The files under metrics/<run>/ that the stages write from `stage_metrics`, {path: JSON}:
    the headline files (`evaluate/fgsm.json`) and the details (`evaluate.json`)."""
    from fragile_neurons.storage import headline

    files = {}
    for stage, summary in stage_metrics(seed, compress, offset).items():
        details = {k: v for k, v in summary.items() if k != "headline"}
        files[f"{stage}.json"] = details
        if "headline" in summary:
            headline.check(stage, summary["headline"])
            for stem, fields in headline.files(stage, summary["headline"]).items():
                files[f"{stage}/{stem}.json"] = fields
    return files


def run_values(seed: int, compress: float = 0.5, offset: float = 0.0) -> dict:
    """`<stage>.<key>` -> value of `metrics_files`, as the sweep and the report read them."""
    from fragile_neurons.storage.headline import read_files

    return read_files(metrics_files(seed, compress, offset))
