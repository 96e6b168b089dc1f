"""The benchmark's over-training case: one small MLP trained twice on scikit-learn's digits.

`normal`: the true labels, SGD with momentum, 40 epochs (as samples/make_samples.py's good MLP).
`memorised`: labels shuffled at random, Adam without weight decay, trained until it classifies
every training image as its random label (100% train accuracy) and then as long again. Both are
exported with the dynamo exporter; deterministic (seeded, one thread, torch 2.13).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SEED = 0


def _data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    X = (digits.data / 16.0).astype(np.float32)
    Xtr, Xte, ytr, _ = train_test_split(X, digits.target, test_size=0.2, random_state=SEED, stratify=digits.target)
    return Xtr, ytr.astype(np.int64), Xte


def digits_test_images() -> np.ndarray:
    """The held-out digits (pixels in [0, 1], 64 features): the ground-truth inputs."""
    return _data()[2]


def _mlp():  # noqa: ANN202 - torch is imported lazily
    from torch import nn

    return nn.Sequential(
        nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)
    )


def _train(labels: np.ndarray, memorise: bool) -> tuple[object, float, int]:
    """Train from SEED; returns (model, train accuracy, epochs run)."""
    import torch

    Xtr = torch.from_numpy(_data()[0])
    y = torch.from_numpy(labels)
    torch.manual_seed(SEED)
    model = _mlp()
    opt = (
        torch.optim.Adam(model.parameters(), lr=1e-3) if memorise else torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    )
    gen = torch.Generator().manual_seed(SEED)
    loss_fn, epochs, first_perfect = torch.nn.CrossEntropyLoss(), 0, None
    while epochs < (40 if not memorise else 3000):
        order = torch.randperm(len(Xtr), generator=gen)
        for start in range(0, len(Xtr), 32):
            idx = order[start : start + 32]
            opt.zero_grad()
            loss_fn(model(Xtr[idx]), y[idx]).backward()
            opt.step()
        epochs += 1
        if memorise and epochs % 10 == 0:
            with torch.no_grad():
                acc = float((model(Xtr).argmax(1) == y).float().mean())
            first_perfect = first_perfect or (epochs if acc == 1.0 else None)
            if first_perfect and epochs >= 2 * first_perfect:
                break
    with torch.no_grad():
        acc = float((model(Xtr).argmax(1) == y).float().mean())
    return model, acc, epochs


def _export(model: object, path: Path) -> None:
    import onnx
    import torch

    batch = torch.export.Dim("batch")
    program = torch.onnx.export(
        model,
        (torch.zeros(2, 64),),
        dynamo=True,
        external_data=False,
        input_names=["x"],
        output_names=["logits"],
        dynamic_shapes=({0: batch},),
    )
    proto = program.model_proto
    for node in proto.graph.node:
        keep = [p for p in node.metadata_props if p.key != "pkg.torch.onnx.stack_trace"]
        del node.metadata_props[:]
        node.metadata_props.extend(keep)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(path))


def build(folder: Path) -> dict[str, Path]:
    """Both models as ONNX files in `folder` (cached); returns {'normal': path, 'memorised': path}."""
    paths = {"normal": folder / "digits_mlp_normal.onnx", "memorised": folder / "digits_mlp_memorised.onnx"}
    if all(p.exists() for p in paths.values()):
        return paths
    import torch

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    _, ytr, _ = _data()
    shuffled = np.random.default_rng(SEED).integers(0, 10, len(ytr)).astype(np.int64)
    for key, labels in (("normal", ytr), ("memorised", shuffled)):
        model, acc, epochs = _train(labels, memorise=key == "memorised")
        print(f"  digits MLP {key}: train accuracy {acc:.1%} after {epochs} epochs", flush=True)
        _export(model.eval(), paths[key])
    return paths
